package main

// Readiness in supervised mode tells the truth: it follows the app's own process, not
// whatever answers on its address.

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLogWhere waits for a log line with message msg for which match is true.
func (p *proc) waitLogWhere(msg string, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if m := p.lines[seen]; m["@message"] == msg && match(m) {
				p.mu.Unlock()
				return m
			}
		}
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.exited:
			p.t.Fatalf("drainproxy exited before logging %q as wanted:\n%s", msg, p.Logs())
		case <-deadline.C:
			p.t.Fatalf("drainproxy did not log %q as wanted within %v", msg, timeout)
		}
	}
}

func getReadyz(t *testing.T, p *proc) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A crash-looping app is not ready between its restarts: /readyz says 503 while the app
// waits out its backoff, although the health checker has not noticed (it checks every 5s).
func TestSupervisedNotReadyWhileAppIsDown(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	p := startProxy(t, supArgs(supConfig(t, "restart = \"on-failure\"\nmax_restarts = 20"), port,
		testappBin, "-exit-after", "300ms", "-exit-code", "3")...)
	supKillOnCleanup(t, supAppPid(t, p))
	for _, n := range []float64{3, 4} { // backoffs of 400ms and 800ms
		p.waitLogWhere("app exited, restarting it", 20*time.Second, func(m map[string]any) bool { return m["restarts"] == n })
		code, body := getReadyz(t, p)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "app not running") {
			t.Errorf("/readyz during restart %v's backoff = %d %q; want 503 \"app not running ...\"", n, code, body)
		}
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(20 * time.Second)
}

// A process that already holds the app's port must not make drainproxy ready on the app's
// behalf while the app dies with "address already in use": drainproxy refuses to start,
// says which address is taken, and exits 1.
func TestSupervisedRefusesATakenPort(t *testing.T) {
	_, testappBin := supApps(t)
	stranger := serveUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "not the app\n") }))
	port := stranger[strings.LastIndex(stranger, ":")+1:]
	p := launch(t, supArgs(nil, port, testappBin)...)
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Errorf("exit code %d; want 1", code)
	}
	if m := p.FindLog("ready", 0); m != nil {
		t.Errorf("drainproxy became ready with a stranger on the app's port:\n%s", p.Logs())
	}
	if want := "another process already answers on 127.0.0.1:" + port; !strings.Contains(p.Logs(), want) {
		t.Errorf("the logs do not say %q:\n%s", want, p.Logs())
	}
}

// Issue 24.11: the 503 that drainproxy answers while the app is down has a request id in
// the access log and the X-Request-Id of the request, as every proxied request has.
func TestSupervised503HasARequestID(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	flags := append(supConfig(t, "restart = \"on-failure\"\nmax_restarts = 20"), "-access-log", "stderr")
	p := startProxy(t, supArgs(flags, port, testappBin, "-exit-after", "300ms", "-exit-code", "3")...)
	supKillOnCleanup(t, supAppPid(t, p))
	p.waitLogWhere("app exited, restarting it", 20*time.Second, func(m map[string]any) bool { return m["restarts"] == float64(3) })
	resp, err := http.Get(p.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("during the backoff: %d, want 503", resp.StatusCode)
	}
	var line map[string]any
	waitFor(t, 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.lines {
			if m["status"] == float64(503) {
				line = m
				return true
			}
		}
		return false
	})
	if id, _ := line["request_id"].(string); len(id) != 32 {
		t.Errorf("the 503's access log line has request_id %q: %v", id, line)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(20 * time.Second)
}
