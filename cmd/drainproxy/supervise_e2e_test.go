package main

// End-to-end tests of supervised mode (drainproxy [flags] -- COMMAND): the real binary runs
// real apps as children (the stand-in, the test app in internal/testapp, python3's
// http.server), and gets real signals.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// supBuilt holds the apps built once for these tests, next to the drainproxy binary.
var supBuilt struct {
	once             sync.Once
	standin, testapp string
	err              error
}

// supApps builds the stand-in and the test app once and returns their paths.
func supApps(t *testing.T) (standinBin, testappBin string) {
	t.Helper()
	supBuilt.once.Do(func() {
		dir := filepath.Dir(binary)
		supBuilt.standin = filepath.Join(dir, "standin")
		supBuilt.testapp = filepath.Join(dir, "testapp")
		for pkg, out := range map[string]string{"../standin": supBuilt.standin, "../../internal/testapp": supBuilt.testapp} {
			if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				supBuilt.err = fmt.Errorf("build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if supBuilt.err != nil {
		t.Fatal(supBuilt.err)
	}
	return supBuilt.standin, supBuilt.testapp
}

// supPort returns a loopback port that was free a moment ago, for the app to listen on.
func supPort(t *testing.T) string {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	return port
}

// supConfig writes an app { ... } block (body) to a config file and returns the flags
// that load it, with the listeners the harness would otherwise add.
func supConfig(t *testing.T, body string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(path, []byte("app {\n"+body+"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-config", path, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}
}

// supArgs is the command line for app (with args) as the child on port.
func supArgs(flags []string, port string, app ...string) []string {
	out := append([]string{"-access-log", "off", "-upstream", "http://127.0.0.1:" + port}, flags...)
	return append(append(out, "--"), app...)
}

// supAppPid is the pid from the "app started" line.
func supAppPid(t *testing.T, p *proc) int {
	t.Helper()
	pid, _ := p.WaitLog("app started", 10*time.Second)["pid"].(float64)
	if pid <= 0 {
		t.Fatalf("no pid in the app started line")
	}
	return int(pid)
}

// supGone waits until no process has pid (it exited and was reaped).
func supGone(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			t.Fatalf("process %d is still there:\n%.300s", pid, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// supKillOnCleanup kills pid at the end of the test if it is still there, so that no
// test leaves a process behind even when it fails halfway.
func supKillOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
}

// supSlowGet starts GET path through the proxy and returns a channel with the outcome.
type supResult struct {
	code int
	body string
	err  error
}

func supSlowGet(url string) <-chan supResult {
	ch := make(chan supResult, 1)
	go func() {
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := client.Get(url)
		if err != nil {
			ch <- supResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- supResult{code: resp.StatusCode, body: string(b), err: err}
	}()
	return ch
}

// supWaitInflight waits until drainproxy reports n requests in flight on /metrics.
func supWaitInflight(t *testing.T, p *proc, n int) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^drainproxy_inflight_requests ` + strconv.Itoa(n) + `$`)
	waitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + p.Admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return re.Match(b)
	})
}

// supLogIndex is the position of the first log line with message msg, or -1.
func supLogIndex(p *proc, msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range p.lines {
		if m["@message"] == msg {
			return i
		}
	}
	return -1
}

// The first example: the stand-in as the child. A slow request in flight at
// SIGTERM finishes 200; only then is the app stopped; exit 0; the app is gone.
func TestSupervisedStandinDrainsThenStopsApp(t *testing.T) {
	standinBin, _ := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(nil, port, standinBin)...)
	pid := supAppPid(t, p)
	supKillOnCleanup(t, pid)

	slow := supSlowGet(p.URL() + "/slow?d=1500ms")
	supWaitInflight(t, p, 1)
	p.Signal(syscall.SIGTERM)
	if r := <-slow; r.err != nil || r.code != 200 {
		t.Fatalf("the request in flight at SIGTERM got %d %v, want 200", r.code, r.err)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
	finished, stopping := supLogIndex(p, "in-flight requests finished"), supLogIndex(p, "stopping the app")
	if finished < 0 || stopping < 0 || stopping < finished {
		t.Fatalf("want the drain to finish (line %d) before the app is stopped (line %d)", finished, stopping)
	}
	if exited := p.WaitLog("app exited", time.Second); exited["signal"] != "SIGTERM" {
		t.Fatalf("app exited %v, want by SIGTERM", exited)
	}
	supGone(t, pid, 5*time.Second)
}

// A Ctrl-C in a terminal sends SIGINT to the foreground process group. The app is in its
// own group, so it keeps serving: the request in flight completes, and the app is stopped
// with the stop signal only after the drain.
func TestSupervisedCtrlCReachesDrainproxyOnly(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := launchWith(t, launchOptions{ownGroup: true}, supArgs(nil, port, testappBin, "-log-requests")...)
	p.WaitLog("ready", 20*time.Second)
	pid := supAppPid(t, p)
	supKillOnCleanup(t, pid)

	slow := supSlowGet(p.URL() + "/slow?d=1500ms")
	p.WaitLog("testapp: request GET /slow?d=1500ms", 10*time.Second)
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT); err != nil { // the whole group, as a terminal does
		t.Fatal(err)
	}
	if r := <-slow; r.err != nil || r.code != 200 {
		t.Fatalf("the request in flight at Ctrl-C got %d %v, want 200 (was the app interrupted too?)", r.code, r.err)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
	if exited := p.WaitLog("app exited", time.Second); exited["signal"] != "SIGTERM" {
		t.Fatalf("app exited %v, want by drainproxy's SIGTERM, not the terminal's SIGINT", exited)
	}
}

// An app that ignores SIGTERM is killed with SIGKILL after stop_timeout, and drainproxy
// exits 1: the app did not stop cleanly.
func TestSupervisedKillsAppThatIgnoresSIGTERM(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(supConfig(t, `stop_timeout = "500ms"`), port, testappBin, "-ignore-term")...)
	pid := supAppPid(t, p)
	supKillOnCleanup(t, pid)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, p.Logs())
	}
	p.WaitLog("app did not exit in time, killing it", time.Second)
	if exited := p.WaitLog("app exited", time.Second); exited["signal"] != "SIGKILL" {
		t.Fatalf("app exited %v, want by SIGKILL", exited)
	}
	supGone(t, pid, 5*time.Second)
}

// restart = "on-failure": an app that crashes once is restarted, and serves again.
func TestSupervisedRestartsOnFailure(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	marker := filepath.Join(t.TempDir(), "crashed-once")
	p := startProxy(t, supArgs(supConfig(t, `restart = "on-failure"`), port,
		testappBin, "-exit-once", marker, "-exit-after", "300ms", "-exit-code", "3")...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)
	restarting := p.WaitLog("app exited, restarting it", 10*time.Second)
	if restarting["exit_code"] != 3.0 || restarting["restarts"] != 1.0 {
		t.Fatalf("restart line %v, want exit_code=3 restarts=1", restarting)
	}
	p.WaitLog("app answers", 10*time.Second)
	waitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get(p.URL() + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
}

// restart = "never" (the default): when the app exits by itself drainproxy drains and
// exits with the app's code.
func TestSupervisedExitsWithTheAppsCode(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(nil, port, testappBin, "-exit-after", "300ms", "-exit-code", "7")...)
	supKillOnCleanup(t, supAppPid(t, p))
	if code := p.Wait(20 * time.Second); code != 7 {
		t.Fatalf("exit code %d, want the app's 7\n%s", code, p.Logs())
	}
	if started := p.WaitLog("drain started", time.Second); started["reason"] != "app exited with exit code 7" {
		t.Fatalf("drain reason %v", started["reason"])
	}
}

// When restarts run out drainproxy gives up: it drains and exits 1.
func TestSupervisedGivesUpAfterMaxRestarts(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(supConfig(t, "restart = \"always\"\nmax_restarts = 2"), port,
		testappBin, "-exit-after", "200ms", "-exit-code", "0")...)
	supKillOnCleanup(t, supAppPid(t, p))
	if code := p.Wait(30 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, p.Logs())
	}
	if gaveUp := p.WaitLog("app keeps exiting, giving up", time.Second); gaveUp["restarts"] != 2.0 {
		t.Fatalf("give-up line %v, want restarts=2", gaveUp)
	}
}

// drainproxy is a subreaper: a process the app leaves behind is re-parented to it, and
// reaped when it exits instead of staying a zombie.
func TestSupervisedReapsOrphans(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(nil, port, testappBin, "-orphan", "1s")...)
	supKillOnCleanup(t, supAppPid(t, p))
	var orphan int
	waitFor(t, 10*time.Second, func() bool {
		m := regexp.MustCompile(`testapp: orphan pid (\d+)`).FindStringSubmatch(p.Logs())
		if m != nil {
			orphan, _ = strconv.Atoi(m[1])
		}
		return m != nil
	})
	supKillOnCleanup(t, orphan)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", orphan))
	if err == nil { // still alive (it lives 1s): its parent must be drainproxy
		want := fmt.Sprintf("PPid:\t%d\n", p.cmd.Process.Pid)
		if !strings.Contains(string(status), want) {
			t.Fatalf("the orphan's status lacks %q:\n%s", want, status)
		}
	}
	supGone(t, orphan, 10*time.Second) // not a zombie: reaped
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
}

// An app that never answers: after start_timeout drainproxy says which address it waited
// for, stops the app and exits 1.
func TestSupervisedStartTimeout(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := launch(t, supArgs(supConfig(t, `start_timeout = "1s"`), port, testappBin, "-no-listen")...)
	pid := supAppPid(t, p)
	supKillOnCleanup(t, pid)
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, p.Logs())
	}
	want := "did not answer on 127.0.0.1:" + port + " within 1s (start_timeout)"
	if !strings.Contains(p.Logs(), want) {
		t.Fatalf("the logs do not say %q:\n%s", want, p.Logs())
	}
	supGone(t, pid, 5*time.Second)
}

// An unmodified program from the machine: python3's http.server, given the port through
// the {port} placeholder.
func TestSupervisedPythonHTTPServer(t *testing.T) {
	python := testenv.NeedProgram(t, "python3", "python3")
	port := supPort(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hi from python\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, supArgs(nil, port, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, "{port}")...)
	pid := supAppPid(t, p)
	supKillOnCleanup(t, pid)
	r := <-supSlowGet(p.URL() + "/hello.txt")
	if r.err != nil || r.code != 200 || r.body != "hi from python\n" {
		t.Fatalf("GET /hello.txt = %d %q %v", r.code, r.body, r.err)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
	supGone(t, pid, 5*time.Second)
}

// forward_signals: SIGUSR2 to drainproxy reaches the app.
func TestSupervisedForwardsSignals(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(supConfig(t, `forward_signals = ["SIGUSR2"]`), port, testappBin, "-report-signals")...)
	supKillOnCleanup(t, supAppPid(t, p))
	p.Signal(syscall.SIGUSR2)
	p.WaitLog("testapp: got SIGUSR2", 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
}

// A command that does not exist is a usage error, named in one line.
func TestSupervisedMissingCommand(t *testing.T) {
	code, out := runBinary(t, "-listen", "127.0.0.1:0", "-admin", "off", "-upstream", "http://127.0.0.1:1", "--", "no-such-app-here")
	if code != 2 || !strings.Contains(out, `app command \"no-such-app-here\"`) {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}
