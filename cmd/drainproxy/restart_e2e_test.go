package main

// End-to-end tests of the zero-downtime app restart (SIGHUP, POST /restart) in supervised
// mode: the real binary, the test app in internal/testapp as its child, real signals, and
// clients that never retry.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// restartPid asks the app behind the proxy for its pid (testapp's GET /pid).
func restartPid(t *testing.T, p *proc) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(p.URL() + "/pid")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if resp.StatusCode != 200 || err != nil {
		t.Fatalf("GET /pid = %d %q", resp.StatusCode, b)
	}
	return pid
}

// restartLogPid is the pid field named key of the first log line msg.
func restartLogPid(t *testing.T, p *proc, msg, key string, timeout time.Duration) int {
	t.Helper()
	pid, _ := p.WaitLog(msg, timeout)[key].(float64)
	if pid <= 0 {
		t.Fatalf("no %s in the %q line", key, msg)
	}
	return int(pid)
}

// rollingRestarts is drainproxy_app_rolling_restarts_total{result} from /metrics.
func rollingRestarts(t *testing.T, p *proc, result string) int {
	t.Helper()
	return int(metricValue(t, p, "", `drainproxy_app_rolling_restarts_total{result="`+result+`"}`))
}

// metricValue is the value of series (name and labels as exposed) in p's /metrics.
func metricValue(t *testing.T, p *proc, token, series string) float64 {
	t.Helper()
	code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/metrics", token)
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v
}

// slowPosts sends n POST /slow?d= to addr on connections of their own, never retrying,
// and returns a channel with each outcome (nil for a 200).
func slowPosts(t *testing.T, addr string, n int, d time.Duration) <-chan error {
	t.Helper()
	out := make(chan error, n)
	for range n {
		rc, err := dialRaw(addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		go func() {
			resp, _, err := rc.do("POST", "/slow?d="+d.String())
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			out <- err
		}()
	}
	return out
}

// restartStopAndCheck drains drainproxy with SIGTERM, expects exit 0, and that none of
// pids is left.
func restartStopAndCheck(t *testing.T, p *proc, pids ...int) {
	t.Helper()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
	for _, pid := range pids {
		supGone(t, pid, 5*time.Second)
	}
}

// (1) Keep-alive clients send POSTs back to back, never retrying, through a SIGHUP
// restart: none is lost, every answer is 200, a new process answers afterwards and the
// old one is gone.
func TestRestartUnderLoadLosesNothing(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(nil, port, testappBin)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)
	if pid := restartPid(t, p); pid != first {
		t.Fatalf("GET /pid = %d, want the app's %d", pid, first)
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	var res loadResult
	clients := keepAliveClients(p.Addr, 8, "/", stop, &res)
	halt := func() { stopOnce.Do(func() { close(stop) }); clients.Wait() }
	t.Cleanup(halt)
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > 300 })

	p.Signal(syscall.SIGHUP)
	next := restartLogPid(t, p, "app restart: new instance started", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	p.WaitLog("app restart: old instance stopped", 30*time.Second)
	before := res.ok.Load()
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > before+300 })
	halt()

	if n := res.lost.Load(); n != 0 {
		t.Errorf("%d requests got no response (first: %v); %d answered", n, res.firstErr.Load(), res.ok.Load())
	}
	if n := res.bad.Load(); n != 0 {
		t.Errorf("%d responses were not 200", n)
	}
	if n := res.refused.Load(); n != 0 {
		t.Errorf("%d connections were refused", n)
	}
	if pid := restartPid(t, p); pid != next || pid == first {
		t.Errorf("after the restart GET /pid = %d, want the new instance's %d (the old was %d)", pid, next, first)
	}
	supGone(t, first, 5*time.Second)
	if ok, failed := rollingRestarts(t, p, "ok"), rollingRestarts(t, p, "failed"); ok != 1 || failed != 0 {
		t.Errorf("app_reloads_total ok=%d failed=%d, want 1 and 0", ok, failed)
	}
	t.Logf("answered %d through the restart", res.ok.Load())
	restartStopAndCheck(t, p, next)
}

// (2) Slow requests in flight on the old instance at SIGHUP finish 200 there; new requests
// go to the new instance meanwhile; the old one is stopped only after they finished.
func TestRestartLetsOldInstanceFinishSlowRequests(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(nil, port, testappBin)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)

	slow := slowPosts(t, p.Addr, 3, 2*time.Second)
	supWaitInflight(t, p, 3)
	p.Signal(syscall.SIGHUP)
	switched := p.WaitLog("app restart: switched", 20*time.Second)
	next := int(switched["pid"].(float64))
	supKillOnCleanup(t, next)
	if pid := restartPid(t, p); pid != next {
		t.Errorf("a request after the switch reached pid %d, want the new instance's %d", pid, next)
	}
	select {
	case err := <-slow:
		t.Fatalf("a slow request finished (%v) before it could have: was it cut off?", err)
	default:
	}
	for range 3 {
		if err := <-slow; err != nil {
			t.Errorf("slow request in flight at SIGHUP: %v, want 200", err)
		}
	}
	p.WaitLog("app restart: old instance stopped", 20*time.Second)
	drained := supLogIndex(p, "app restart: old instance drained")
	stopping := restartLogIndex(p, "stopping the app", first)
	if drained < 0 || stopping < drained {
		t.Errorf("want the old instance drained (line %d) before it is stopped (line %d)", drained, stopping)
	}
	supGone(t, first, 5*time.Second)
	restartStopAndCheck(t, p, next)
}

// restartLogIndex is the position of the first line msg with that pid, or -1.
func restartLogIndex(p *proc, msg string, pid int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range p.lines {
		if m["@message"] == msg && m["pid"] == float64(pid) {
			return i
		}
	}
	return -1
}

// (3) A new instance that never answers is stopped after start_timeout; the old one keeps
// serving, the restart counts as failed, and no process is left behind.
func TestRestartNewInstanceNeverHealthy(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	marker := filepath.Join(t.TempDir(), "no-listen")
	p := startProxy(t, supArgs(supConfig(t, `start_timeout = "1s"`), port, testappBin, "-no-listen-if", marker)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)
	if err := os.WriteFile(marker, nil, 0o600); err != nil { // later runs never listen
		t.Fatal(err)
	}

	p.Signal(syscall.SIGHUP)
	next := restartLogPid(t, p, "app restart: new instance started", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	failed := p.WaitLog("app restart failed; the old instance keeps serving", 20*time.Second)
	if !strings.Contains(failed["error"].(string), "within 1s (start_timeout)") {
		t.Errorf("failure line %v: want it to name the start timeout", failed)
	}
	supGone(t, next, 10*time.Second)
	if pid := restartPid(t, p); pid != first {
		t.Errorf("after the failed restart GET /pid = %d, want the old instance's %d", pid, first)
	}
	if ok, failed := rollingRestarts(t, p, "ok"), rollingRestarts(t, p, "failed"); ok != 0 || failed != 1 {
		t.Errorf("app_reloads_total ok=%d failed=%d, want 0 and 1", ok, failed)
	}
	restartStopAndCheck(t, p, first)
}

// (4) POST /restart on the admin listener does what SIGHUP does; a second one while the
// first runs is refused with 409, and one during a drain with 503.
func TestRestartAdminEndpoint(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs([]string{"-drain-delay", "3s"}, port, testappBin)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)
	post := func() (int, string) {
		resp, err := http.Post("http://"+p.Admin+"/restart", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	slow := slowPosts(t, p.Addr, 1, 1500*time.Millisecond) // keeps the restart busy
	supWaitInflight(t, p, 1)
	if code, body := post(); code != http.StatusAccepted {
		t.Fatalf("POST /restart = %d %q, want 202", code, body)
	}
	next := restartLogPid(t, p, "app restart: switched", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	if code, body := post(); code != http.StatusConflict || !strings.Contains(body, "already in progress") {
		t.Errorf("POST /restart during a restart = %d %q, want 409", code, body)
	}
	if err := <-slow; err != nil {
		t.Errorf("slow request in flight at the restart: %v", err)
	}
	p.WaitLog("app restart: old instance stopped", 20*time.Second)
	if pid := restartPid(t, p); pid != next || pid == first {
		t.Errorf("after POST /restart GET /pid = %d, want the new instance's %d", pid, next)
	}
	supGone(t, first, 5*time.Second)

	p.Signal(syscall.SIGTERM)
	p.WaitLog("drain started", 10*time.Second)
	if code, body := post(); code != http.StatusServiceUnavailable {
		t.Errorf("POST /restart during the drain = %d %q, want 503", code, body)
	}
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
	supGone(t, next, 5*time.Second)
}

// (5) SIGTERM while a new instance is still starting: the drain wins, the new instance is
// stopped, the old one serves out the drain and is stopped, and drainproxy exits 0.
func TestRestartDrainDuringRestart(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	marker := filepath.Join(t.TempDir(), "no-listen")
	p := startProxy(t, supArgs(supConfig(t, `start_timeout = "30s"`), port, testappBin, "-no-listen-if", marker)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	p.Signal(syscall.SIGHUP)
	next := restartLogPid(t, p, "app restart: new instance started", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	slow := slowPosts(t, p.Addr, 1, time.Second)
	supWaitInflight(t, p, 1)
	p.Signal(syscall.SIGTERM)
	if err := <-slow; err != nil {
		t.Errorf("request in flight at SIGTERM during the restart: %v, want 200", err)
	}
	failed := p.WaitLog("app restart failed; the old instance keeps serving", 20*time.Second)
	if !strings.Contains(failed["error"].(string), "draining") {
		t.Errorf("failure line %v: want it to say the drain abandoned it", failed)
	}
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
	supGone(t, next, 5*time.Second)
	supGone(t, first, 5*time.Second)
	if supLogIndex(p, "app restart: switched") >= 0 {
		t.Error("the restart switched during the drain")
	}
}
