package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// upgradable is a drainproxy started for an upgrade test. The process an upgrade starts
// inherits its stderr, so stderr goes to a file (a pipe would stay open until that one
// exits too), and this test process becomes a subreaper so that the new process, orphaned
// when the old one exits, is reparented here and its exit code can be read.
type upgradable struct {
	t      *testing.T
	cmd    *exec.Cmd
	listen string
	admin  string
	logs   string // path of the shared stderr file
	exited chan int
}

func startUpgradable(t *testing.T, args ...string) *upgradable {
	t.Helper()
	return startUpgradableEnv(t, nil, args...)
}

// startUpgradableEnv is startUpgradable with env added to the process's environment.
func startUpgradableEnv(t *testing.T, env []string, args ...string) *upgradable {
	t.Helper()
	return startUpgradableListening(t, env, true, args...)
}

// startUpgradableListening is startUpgradableEnv; without listen, the listeners are the
// config file's (a reload may change them) and u.listen is not served.
func startUpgradableListening(t *testing.T, env []string, listen bool, args ...string) *upgradable {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become a subreaper: %v", err)
	}
	u := &upgradable{t: t, listen: freeAddr(t), admin: freeAddr(t), logs: filepath.Join(t.TempDir(), "stderr"), exited: make(chan int, 1)}
	stderr, err := os.Create(u.logs)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	full := []string{"-log-format", "json", "-access-log", "off", "-admin", u.admin}
	if listen {
		full = append(full, "-listen", u.listen)
	}
	full = append(full, args...)
	u.cmd = exec.Command(binary, full...)
	u.cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1"), env...)
	u.cmd.Stderr = stderr
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		u.cmd.Wait()
		u.exited <- u.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		u.cmd.Process.Kill()
		if pid := u.servingPID(); pid > 0 && pid != u.cmd.Process.Pid {
			syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
		}
		if t.Failed() {
			b, _ := os.ReadFile(u.logs)
			t.Logf("drainproxy stderr (both processes):\n%s", b)
		}
	})
	waitFor(t, 20*time.Second, func() bool { return u.servingPID() == u.cmd.Process.Pid })
	return u
}

// servingPID is the pid /status reports while /readyz says ready, else 0.
func (u *upgradable) servingPID() int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + u.admin + "/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Ready bool `json:"ready"`
		PID   int  `json:"pid"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil || !st.Ready {
		return 0
	}
	return st.PID
}

// Issue 16.2 and 16.4: SIGUSR2 under 50 never-retrying keep-alive clients and 10 slow
// requests: nothing fails, no connection is refused, the old process exits 0 after its
// drain, and the new one serves.
func TestUpgradeUnderLoadLosesNothing(t *testing.T) {
	up, arrived := drainUpstream(t)
	notify := newNotifySocket(t)
	u := startUpgradableEnv(t, []string{"NOTIFY_SOCKET=" + notify.path}, "-upstream", up, "-grace", "20s")
	oldPid := u.cmd.Process.Pid
	notify.await(t, 10*time.Second, "READY=1")

	stop := make(chan struct{})
	var res loadResult
	clients := keepAliveClients(u.listen, 50, "/", stop, &res)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			close(stop)
			clients.Wait()
		}
	})
	longStatus := slowPosts(t, u.listen, 10, 2*time.Second)
	awaitArrivals(t, arrived, 10)
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > 500 })

	if err := syscall.Kill(oldPid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var code int
	select {
	case code = <-u.exited:
	case <-time.After(40 * time.Second):
		t.Fatal("the old process did not exit within 40s of SIGUSR2")
	}
	if code != 0 {
		t.Fatalf("the old process exited %d, want 0", code)
	}
	newPid := u.servingPID()
	if newPid == 0 || newPid == oldPid {
		t.Fatalf("after the upgrade /status says pid %d is serving (old pid %d)", newPid, oldPid)
	}
	atExit := res.ok.Load()
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > atExit+500 }) // the new process serves the load
	// systemd hears of the new main pid, and not STOPPING=1 from the old one.
	if m := notify.await(t, 5*time.Second, "MAINPID="+strconv.Itoa(newPid), "READY=1"); strings.Contains(m, "STOPPING=1") {
		t.Errorf("notification %q", m)
	}
	for len(notify.msgs) > 0 {
		if m := <-notify.msgs; strings.Contains(m, "STOPPING=1") {
			t.Errorf("the old process told systemd STOPPING=1 after the handover: %q", m)
		}
	}

	close(stop)
	clients.Wait()
	stopped = true
	for range 10 {
		if err := <-longStatus; err != nil {
			t.Errorf("a slow request in flight at SIGUSR2 failed: %v", err)
		}
	}
	t.Logf("%d requests answered; lost %d, refused %d, not 200 %d; old pid %d, new pid %d",
		res.ok.Load(), res.lost.Load(), res.refused.Load(), res.bad.Load(), oldPid, newPid)
	if n := res.lost.Load(); n != 0 {
		t.Errorf("%d requests lost across the upgrade (first: %v)", n, res.firstErr.Load())
	}
	if n := res.refused.Load(); n != 0 {
		t.Errorf("%d connections refused across the upgrade", n)
	}
	if n := res.bad.Load(); n != 0 {
		t.Errorf("%d responses were not 200", n)
	}

	if err := syscall.Kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(newPid, &ws, 0, nil); err != nil {
		t.Fatalf("wait for the new process: %v", err)
	}
	if ws.ExitStatus() != 0 {
		t.Fatalf("the new process exited %d on SIGTERM, want 0", ws.ExitStatus())
	}
}

// logged reports whether a line with message msg is in the shared stderr file.
func (u *upgradable) logged(msg string) map[string]any {
	b, _ := os.ReadFile(u.logs)
	for _, line := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["@message"] == msg {
			return m
		}
	}
	return nil
}

// Issue 16.2: a new process that cannot start (here: the configuration it reads is
// broken) changes nothing: the old process says why and keeps serving.
func TestFailedUpgradeKeepsServing(t *testing.T) {
	up := startCountingUpstream(t)
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	writeConfig(t, cfgPath, "upstream {\n  url = \"http://"+up.addr+"\"\n}\n")
	u := startUpgradable(t, "-config", cfgPath)
	oldPid := u.cmd.Process.Pid

	writeConfig(t, cfgPath, "upstream {\n  url = \"http://"+up.addr+"\"\n  idle_conns = 0\n}\n")
	if err := syscall.Kill(oldPid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	waitFor(t, 20*time.Second, func() bool { m = u.logged("upgrade failed: this process keeps serving"); return m != nil })
	t.Logf("logged: %v", m["error"])
	if pid := u.servingPID(); pid != oldPid {
		t.Fatalf("after a failed upgrade /status says pid %d serves, want the old %d", pid, oldPid)
	}
	resp, err := http.Get("http://" + u.listen + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("not serving after a failed upgrade: %v %v", resp, err)
	}
	resp.Body.Close()
	u.cmd.Process.Signal(syscall.SIGTERM)
	if code := <-u.exited; code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// appPid asks the app behind the proxy at addr for its pid (testapp's GET /pid).
func appPid(t *testing.T, addr string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/pid")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pid int
	if _, err := fmt.Fscan(resp.Body, &pid); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /pid = %d: %v", resp.StatusCode, err)
	}
	return pid
}

// Issue 16.2, supervised mode: the new process starts its own app instance (on a fresh
// port, since the old instance still serves on its own), the old process stops its app
// after its drain, and the keep-alive load sees nothing fail.
func TestSupervisedUpgradeStartsItsOwnApp(t *testing.T) {
	_, testappBin := supApps(t)
	u := startUpgradable(t, supArgs(nil, supPort(t), testappBin)...)
	oldPid := u.cmd.Process.Pid
	oldApp := appPid(t, u.listen)
	supKillOnCleanup(t, oldApp)

	stop := make(chan struct{})
	var res loadResult
	clients := keepAliveClients(u.listen, 8, "/", stop, &res)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			close(stop)
			clients.Wait()
		}
	})
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > 300 })
	if err := syscall.Kill(oldPid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-u.exited:
		if code != 0 {
			t.Fatalf("the old process exited %d, want 0", code)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the old process did not exit within 60s of SIGUSR2")
	}
	supGone(t, oldApp, 10*time.Second) // the old process stopped its app
	newApp := appPid(t, u.listen)
	supKillOnCleanup(t, newApp)
	if newApp == oldApp {
		t.Fatalf("after the upgrade the app is still pid %d", oldApp)
	}
	atExit := res.ok.Load()
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > atExit+300 })
	close(stop)
	clients.Wait()
	stopped = true
	t.Logf("%d requests answered; lost %d, refused %d, not 200 %d", res.ok.Load(), res.lost.Load(), res.refused.Load(), res.bad.Load())
	if n := res.lost.Load() + res.refused.Load() + res.bad.Load(); n != 0 {
		t.Errorf("%d requests lost, refused or not 200 across the upgrade (first: %v)", n, res.firstErr.Load())
	}
	newPid := u.servingPID()
	if err := syscall.Kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(newPid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("the new process on SIGTERM: exit %d, %v; want 0", ws.ExitStatus(), err)
	}
}

// Issue 16.2: drainproxy as PID 1 (here of a PID namespace, as in a container) refuses to
// upgrade in one log line, and keeps serving.
func TestUpgradeRefusedAsPID1(t *testing.T) {
	testenv.NeedRoot(t, "a PID namespace, so that drainproxy is PID 1")
	unshare := testenv.NeedProgram(t, "unshare", "util-linux")
	up := startCountingUpstream(t)
	listen, admin := freeAddr(t), freeAddr(t)
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", binary, "-log-format", "json",
		"-access-log", "off", "-upstream", "http://"+up.addr, "-listen", listen, "-admin", admin)
	logs := filepath.Join(t.TempDir(), "stderr")
	stderr, err := os.Create(logs)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	u := &upgradable{t: t, admin: admin, logs: logs}
	waitFor(t, 20*time.Second, func() bool { return u.servingPID() == 1 })
	// unshare's only child is drainproxy; signal it by its pid out here.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("children of unshare: %q", b)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	msg := "cannot upgrade: drainproxy is PID 1 (a container's init), and the container ends when it exits; replace the container with one of the new image instead"
	waitFor(t, 10*time.Second, func() bool { m = u.logged(msg); return m != nil })
	if got := u.servingPID(); got != 1 {
		t.Fatalf("after the refused upgrade /status says pid %d serves, want 1", got)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("drainproxy as PID 1 on SIGTERM: %v", err)
	}
}
