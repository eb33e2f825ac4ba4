package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// notifySocket is a NOTIFY_SOCKET as systemd opens it: a unix datagram socket whose
// messages the test reads.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify"), msgs: make(chan string, 256)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// await returns the first message (from now on) holding every one of the lines want.
func (n *notifySocket) await(t *testing.T, timeout time.Duration, want ...string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %q", want)
			}
			lines := strings.Split(m, "\n")
			all := true
			for _, w := range want {
				found := false
				for _, l := range lines {
					found = found || l == w || (strings.HasSuffix(w, "=") && strings.HasPrefix(l, w))
				}
				all = all && found
			}
			if all {
				return m
			}
		case <-deadline:
			t.Fatalf("no notification with %q within %v", want, timeout)
		}
	}
}

// tcpSocket binds a listening socket the way systemd does for a .socket unit, and returns
// it as a file to pass on (the test keeps it open, as systemd does).
func tcpSocket(t *testing.T) (addr string, f *os.File) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // plain TCP, as systemd's ListenStream= binds it
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err = ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close() // f is a descriptor of its own
	t.Cleanup(func() { f.Close() })
	return addr, f
}

// launchActivated starts drainproxy with files as fds 3, 4, ... and LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID set as systemd sets them: LISTEN_PID must be the pid of
// the process that reads them, so a shell sets it to its own pid and execs drainproxy.
func launchActivated(t *testing.T, files []*os.File, names string, env []string, args ...string) *proc {
	t.Helper()
	full := append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, binary,
		"-log-format", "json", "-log-level", "debug", "-access-log", "off"}, args...)
	cmd := exec.Command("/bin/sh", full...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+names)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	return startCmd(t, cmd)
}

// startCmd starts cmd (a drainproxy, perhaps behind a shell that execs it) as launch
// does, and returns once it logged "ready".
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := startProc(t, cmd, nil)
	p.WaitLog("ready", 20*time.Second)
	return p
}

// Issue 16.3: sockets passed the way systemd passes them are served (the admin one found
// by FileDescriptorName=admin, the public one by its address); sd_notify says READY=1,
// RELOADING=1 with MONOTONIC_USEC then READY=1 around a reload, WATCHDOG=1, STOPPING=1;
// and between two instances on the same sockets (systemctl restart) a client that
// connects meanwhile is answered by the next one, not refused.
func TestSystemdSocketActivationAndNotify(t *testing.T) {
	up := startUpstream(t)
	public, publicFile := tcpSocket(t)
	admin, adminFile := tcpSocket(t)
	notify := newNotifySocket(t)
	env := []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=400000"}
	args := []string{"-upstream", up, "-listen", public, "-admin", "127.0.0.1:0"}

	p := launchActivated(t, []*os.File{publicFile, adminFile}, "web:admin", env, args...)
	notify.await(t, 10*time.Second, "READY=1", "STATUS=")
	if p.Admin != admin {
		t.Errorf("admin listener on %s, want the socket named admin (%s)", p.Admin, admin)
	}
	resp, err := http.Get("http://" + public + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET through the activated socket: %v %v", resp, err)
	}
	resp.Body.Close()
	notify.await(t, 10*time.Second, "WATCHDOG=1")

	p.Signal(syscall.SIGHUP)
	notify.await(t, 10*time.Second, "RELOADING=1", "MONOTONIC_USEC=")
	notify.await(t, 10*time.Second, "READY=1")

	p.Signal(syscall.SIGTERM)
	notify.await(t, 10*time.Second, "STOPPING=1")
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}

	// No drainproxy runs now; systemd (here the test) still holds the socket, so the
	// kernel queues the connection, and the next instance answers it.
	rc, err := dialRaw(public, 2*time.Second)
	if err != nil {
		t.Fatalf("connecting between two instances: %v (the first one left the socket refusing)", err)
	}
	defer rc.Close()
	answered := make(chan error, 1)
	go func() {
		resp, _, err := rc.do("GET", "/")
		if err == nil && resp.StatusCode != 200 {
			err = &net.AddrError{Err: resp.Status}
		}
		answered <- err
	}()
	p2 := launchActivated(t, []*os.File{publicFile, adminFile}, "web:admin", env, args...)
	if err := <-answered; err != nil {
		t.Fatalf("the request queued between two instances: %v", err)
	}
	p2.Signal(syscall.SIGTERM)
	if code := p2.Wait(15 * time.Second); code != 0 {
		t.Fatalf("second instance: exit code %d, want 0", code)
	}
}

// Issue 16.3 with Debian's systemd-socket-activate, which binds the socket, waits for the
// first connection and execs drainproxy with it: that first request is answered.
func TestSystemdSocketActivateProgram(t *testing.T) {
	sa := testenv.NeedProgram(t, "systemd-socket-activate", "systemd")
	up := startUpstream(t)
	public := freeAddr(t)
	cmd := exec.Command(sa, "-l", public, binary,
		"-log-format", "json", "-access-log", "off", "-upstream", up, "-listen", public, "-admin", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var resp *http.Response
	waitFor(t, 10*time.Second, func() bool {
		var err error
		c := http.Client{Timeout: 5 * time.Second}
		resp, err = c.Get("http://" + public + "/")
		return err == nil
	})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first request through systemd-socket-activate: %d", resp.StatusCode)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("drainproxy under systemd-socket-activate on SIGTERM: %v", err)
	}
}

// A supervised app does not inherit NOTIFY_SOCKET: with NotifyAccess=all (which upgrades
// need) its own READY=1 or STOPPING=1 would count as the service's. drainproxy itself
// still notifies.
func TestSupervisedAppDoesNotSeeNotifySocket(t *testing.T) {
	_, testappBin := supApps(t)
	notify := newNotifySocket(t)
	u := startUpgradableEnv(t, []string{"NOTIFY_SOCKET=" + notify.path},
		supArgs(nil, supPort(t), "/bin/sh", "-c", `echo "app sees NOTIFY_SOCKET=[$NOTIFY_SOCKET]" >&2; exec "$0"`, testappBin)...)
	notify.await(t, 10*time.Second, "READY=1")
	var logs string
	waitFor(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(u.logs)
		logs = string(b)
		return strings.Contains(logs, "app sees NOTIFY_SOCKET=[]") || strings.Contains(logs, "app sees NOTIFY_SOCKET=[/")
	})
	if !strings.Contains(logs, "app sees NOTIFY_SOCKET=[]") {
		t.Fatalf("the app inherited NOTIFY_SOCKET:\n%s", logs)
	}
	supKillOnCleanup(t, appPid(t, u.listen))
	u.cmd.Process.Signal(syscall.SIGTERM)
	if code := <-u.exited; code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}
