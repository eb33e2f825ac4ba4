package handover

// Tests with real processes: the test binary runs again as a small server that uses a
// Handover (helper, below), started the way systemd starts a service, and upgrades itself
// on SIGUSR2 as drainproxy does. tableflip restarts it with its own arguments and
// environment, so the process an upgrade starts is a helper too.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	envHelper = "HANDOVER_TEST_HELPER" // any value: run as the helper
	envListen = "HANDOVER_TEST_LISTEN" // address=name,... to Listen on
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(helper())
	}
	os.Exit(m.Run())
}

// report is what a helper prints on stdout once ready, one JSON line.
type report struct {
	PID          int      `json:"pid"`
	Upgraded     bool     `json:"upgraded"`
	Bound        []string `json:"bound"`   // each listener's bound address, in order
	Systemd      []string `json:"systemd"` // configured addresses systemd holds
	NotifySocket string   `json:"notify_socket"`
	WatchdogUsec int64    `json:"watchdog_usec"`
}

// testDrainer is the helper's drain: Drain ends the helper.
type testDrainer struct{ requested chan struct{} }

func (d *testDrainer) Drain(string)               { close(d.requested) }
func (d *testDrainer) Requested() <-chan struct{} { return d.requested }

// helper serves its pid on every listener in HANDOVER_TEST_LISTEN until an upgrade hands
// over (exit 0) or SIGTERM.
func helper() int {
	log := hclog.New(&hclog.LoggerOptions{Name: "helper", Output: os.Stderr, Level: hclog.Debug})
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	h := New(Options{Logger: log, UpgradeTimeout: 30 * time.Second})
	defer h.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep := report{PID: os.Getpid(), Upgraded: h.Upgraded()}
	pid := strconv.Itoa(os.Getpid())
	var servers []*http.Server
	for spec := range strings.SplitSeq(os.Getenv(envListen), ",") {
		addr, name, _ := strings.Cut(spec, "=")
		ln, err := h.Listen(ctx, addr, name, 0)
		if err != nil {
			log.Error("listen", "error", err.Error())
			return 2
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, pid) })}
		go srv.Serve(ln)
		servers = append(servers, srv)
		rep.Bound = append(rep.Bound, ln.Addr().String())
	}
	h.CloseUnused()
	d := &testDrainer{requested: make(chan struct{})}
	h.Ready(d, nil)
	go h.Notifier().RunWatchdog(ctx)
	h.mu.Lock()
	for a := range h.fromSystemd {
		rep.Systemd = append(rep.Systemd, a)
	}
	h.mu.Unlock()
	rep.NotifySocket, rep.WatchdogUsec = h.notify.socket, h.notify.watchdog.Microseconds()
	b, _ := json.Marshal(rep)
	fmt.Printf("%s\n", b)
	stop := h.TrapUpgrade()
	defer stop()
	select {
	case <-d.requested:
	case <-term:
	}
	for _, srv := range servers {
		srv.Close() // this process's descriptors; the next process has its own
	}
	return 0
}

// notifySocket is a NOTIFY_SOCKET as systemd opens it.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify"), msgs: make(chan string, 1024)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		defer close(n.msgs)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// await returns the first message from now on that holds every line of want.
func (n *notifySocket) await(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-n.msgs:
			lines := strings.Split(m, "\n")
			if !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(lines, w) }) {
				return m
			}
		case <-deadline:
			t.Fatalf("no notification with %q within 30s", want)
		}
	}
}

// activatedSocket binds 127.0.0.1:0 as systemd binds a .socket unit's socket, and returns
// it as a file to pass on (the test keeps it open, as systemd does).
func activatedFile(t *testing.T) (addr string, f *os.File) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if f, err = ln.(*net.TCPListener).File(); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String(), f
}

// startService starts a helper as systemd starts a service's main process: files as fds
// 3, 4, ... with LISTEN_FDS and LISTEN_FDNAMES, and LISTEN_PID and WATCHDOG_PID naming it
// (set by a shell that then execs the helper, so that the pid is the helper's).
func startService(t *testing.T, files []*os.File, names string, env ...string) (cmd *exec.Cmd, reports <-chan report, logs string) {
	cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ WATCHDOG_PID=$$; export LISTEN_PID WATCHDOG_PID; exec "$0" "$@"`,
		os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"=1", "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+names)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr // a file: the processes an upgrade starts write to it too
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(stderr.Name())
			t.Logf("the helpers' logs:\n%s", b)
		}
		stderr.Close()
	})
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan report, 4)
	go func() { // every helper of this service, upgraded ones too, writes here
		defer close(ch) // all of them exited
		s := bufio.NewScanner(out)
		for s.Scan() {
			var r report
			if json.Unmarshal(s.Bytes(), &r) == nil && r.PID != 0 {
				ch <- r
			}
		}
	}()
	return cmd, ch, stderr.Name()
}

func awaitReport(t *testing.T, reports <-chan report) report {
	t.Helper()
	select {
	case r, ok := <-reports:
		if !ok {
			t.Fatal("the helper exited without becoming ready")
		}
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no helper became ready within 30s")
		return report{}
	}
}

// servedBy is the pid that answers on addr, over a new connection.
func servedBy(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pid, _ := strconv.Atoi(string(b))
	return pid
}

// An upgrade hands every socket to the new process, the one systemd passed included; the
// new process knows which of them systemd holds, and takes over systemd's notification
// socket and watchdog, which its environment (the old process's, with LISTEN_PID and
// WATCHDOG_PID naming that one) does not give it.
func TestUpgradeHandsOverSocketsAndSystemdState(t *testing.T) {
	activated, f := activatedFile(t)
	notify := newNotifySocket(t)
	// The activated socket is matched by name, whatever address is configured for it; the
	// second listener is bound by the helper.
	cmd, reports, _ := startService(t, []*os.File{f}, "web",
		envListen+"=127.0.0.1:1=web,127.0.0.1:0=", "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=300000")
	exited := make(chan error, 1)
	go func() { // not cmd.Wait, which would wait for the new process too (it shares stdout)
		st, err := cmd.Process.Wait()
		if err == nil && !st.Success() {
			err = fmt.Errorf("exit status %d", st.ExitCode())
		}
		exited <- err
	}()
	first := awaitReport(t, reports)
	t.Cleanup(func() { syscall.Kill(first.PID, syscall.SIGKILL) })
	notify.await(t, "READY=1", "STATUS=serving")
	if first.Upgraded || first.Bound[0] != activated || !slices.Equal(first.Systemd, []string{"127.0.0.1:1"}) ||
		first.NotifySocket != notify.path || first.WatchdogUsec != 300000 {
		t.Fatalf("first process: %+v, want the socket systemd passed (%s) held by systemd, and the watchdog", first, activated)
	}
	bound := first.Bound[1]
	for _, a := range first.Bound {
		if pid := servedBy(t, a); pid != first.PID {
			t.Fatalf("%s served by pid %d, want %d", a, pid, first.PID)
		}
	}

	if err := syscall.Kill(first.PID, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	next := awaitReport(t, reports)
	t.Cleanup(func() { syscall.Kill(next.PID, syscall.SIGKILL) })
	notify.await(t, "MAINPID="+strconv.Itoa(next.PID), "READY=1")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the first process: %v, want exit 0 after the handover", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first process did not exit within 30s of the handover")
	}
	if !next.Upgraded || !slices.Equal(next.Bound, []string{activated, bound}) || !slices.Equal(next.Systemd, []string{"127.0.0.1:1"}) ||
		next.NotifySocket != notify.path || next.WatchdogUsec != 300000 {
		t.Fatalf("after the upgrade: %+v, want the same sockets, systemd's one marked, and the watchdog", next)
	}
	for _, a := range next.Bound {
		if pid := servedBy(t, a); pid != next.PID {
			t.Fatalf("%s served by pid %d after the upgrade, want %d", a, pid, next.PID)
		}
	}
	notify.await(t, "WATCHDOG=1") // the first process is gone: only the new one sends these
	syscall.Kill(next.PID, syscall.SIGTERM)
}

// Without a name, a socket systemd passed is matched by the address it is bound to; one
// that no listener takes is closed with a warning that says how to match it.
func TestSocketActivationByAddress(t *testing.T) {
	byAddr, f1 := activatedFile(t)
	_, f2 := activatedFile(t)
	cmd, reports, logs := startService(t, []*os.File{f1, f2}, ":spare", envListen+"="+byAddr+"=")
	r := awaitReport(t, reports)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if !slices.Equal(r.Bound, []string{byAddr}) || !slices.Equal(r.Systemd, []string{byAddr}) || r.NotifySocket != "" || r.WatchdogUsec != 0 {
		t.Fatalf("report %+v, want the socket bound to %s, held by systemd, and no notifications", r, byAddr)
	}
	if pid := servedBy(t, byAddr); pid != r.PID {
		t.Fatalf("served by pid %d, want %d", pid, r.PID)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	b, _ := os.ReadFile(logs)
	if !strings.Contains(string(b), "a socket systemd passed matches no listener") || !strings.Contains(string(b), "name=spare") {
		t.Fatalf("no warning about the socket named spare:\n%s", b)
	}
}
