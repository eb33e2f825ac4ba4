package main

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/sigtrap"
)

// slowGet sends GET path on a fresh raw connection and reports its outcome on the
// returned channel: nil for a 200.
func slowGet(t *testing.T, addr, path string) <-chan error {
	t.Helper()
	rc, err := dialRaw(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	done := make(chan error, 1)
	go func() {
		resp, _, err := rc.do("GET", path)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		done <- err
	}()
	return done
}

// inflight is the proxy's count of requests in flight, from the admin's /metrics.
func (p *proc) inflight() float64 {
	p.t.Helper()
	return adminMetric(p.t, adminScrape(p.t, p, ""), "drainproxy_inflight_requests")
}

// Issue 13.10: without a supervised app and without certificate files (the compose and
// Kubernetes case) SIGHUP used to end drainproxy at once (exit 129), cutting the request in
// flight. It is trapped: the request finishes, the process keeps serving, and SIGTERM
// still drains it cleanly.
func TestSIGHUPNeverKillsTheProxy(t *testing.T) {
	p := startProxy(t, "-upstream", startUpstream(t))
	inflight := slowGet(t, p.Addr, "/slow?d=1500ms")
	waitFor(t, 5*time.Second, func() bool { return p.inflight() == 1 })

	p.Signal(syscall.SIGHUP)
	p.WaitLog("configuration reloaded", 5*time.Second)
	if err := <-inflight; err != nil {
		t.Fatalf("the request in flight at SIGHUP failed: %v", err)
	}
	select {
	case <-p.Exited():
		t.Fatalf("drainproxy exited with %d on SIGHUP", p.exitCode)
	default:
	}
	resp, err := http.Get(p.URL() + "/")
	if err != nil {
		t.Fatalf("not serving after SIGHUP: %v", err)
	}
	resp.Body.Close()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

// Issue 13.10: timeout(1) and scripts that kill a job signal it twice at once, through
// its process group and directly. That is one request to drain, not a second signal that
// forces: the request in flight finishes and the exit code is 0.
func TestDoubleDeliveredSIGTERMDoesNotForce(t *testing.T) {
	p := launchWith(t, launchOptions{ownGroup: true}, "-upstream", startUpstream(t), "-grace", "20s")
	p.WaitLog("ready", 20*time.Second)
	inflight := slowGet(t, p.Addr, "/slow?d=1500ms")
	waitFor(t, 5*time.Second, func() bool { return p.inflight() == 1 })

	pid := p.cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil { // the process group, as timeout(1) does
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil { // and the process itself
		t.Fatal(err)
	}
	if err := <-inflight; err != nil {
		t.Fatalf("the request in flight at the double SIGTERM failed: %v", err)
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0 (a double delivery forced the drain?)\n%s", code, p.Logs())
	}
	if m := p.FindLog("forcing the drain: closing whatever is still open", 0); m != nil {
		t.Fatalf("the drain was forced: %v", m)
	}
}

// Issue 24.11: a second SIGTERM forces the drain, and the log says so instead of claiming
// that the grace period (20s here) was over.
func TestSecondSIGTERMLogsAForcedDrain(t *testing.T) {
	p := startProxy(t, "-upstream", startUpstream(t), "-grace", "20s")
	inflight := slowGet(t, p.Addr, "/slow?d=15s")
	waitFor(t, 5*time.Second, func() bool { return p.inflight() == 1 })
	p.Signal(syscall.SIGTERM)
	p.WaitLog("stopped accepting", 5*time.Second)
	time.Sleep(2 * sigtrap.Coalesce) // a second signal, not the same one delivered twice
	p.Signal(syscall.SIGTERM)
	p.WaitLog("drain forced before the grace period was over, closing what is still open", 5*time.Second)
	if m := p.FindLog("grace period over, closing what is still open", 0); m != nil {
		t.Errorf("a forced drain logged that the grace period was over: %v", m)
	}
	<-inflight
	if code := p.Wait(10 * time.Second); code != 1 {
		t.Errorf("exit code %d after a forced drain, want 1", code)
	}
}
