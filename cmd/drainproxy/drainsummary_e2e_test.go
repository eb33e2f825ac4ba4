package main

import (
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

// The sidecar case: the app is gone while drainproxy still drains. The requests
// drainproxy answers 502 for it are counted in the summary line and in the metrics; the
// exit code stays 0, as documented (the drain itself lost nothing it held).
func TestDrainSummaryCountsUpstreamFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: standin.Handler()}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	p := startProxy(t, "-upstream", "http://"+ln.Addr().String(), "-drain-delay", "4s")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func() int {
		resp, err := client.Get(p.URL() + "/")
		if err != nil {
			t.Fatalf("GET /: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("GET / before the drain = %d", code)
	}

	p.Signal(syscall.SIGTERM)
	adminWaitReadyz(t, p, 503, "draining")
	app.Close() // the app exits at once on SIGTERM, as a legacy app does
	const failed = 5
	for range failed {
		if code := get(); code != http.StatusBadGateway {
			t.Fatalf("GET / with the app gone = %d, want 502", code)
		}
	}
	if n := adminMetric(t, adminScrape(t, p, ""), "drainproxy_drain_upstream_failed_total"); n != failed {
		t.Errorf("drainproxy_drain_upstream_failed_total = %v during the drain, want %d", n, failed)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0 (upstream failures do not change it)", code)
	}
	sum := p.WaitLog("drain complete", time.Second)
	if sum["upstream_failed"] != float64(failed) {
		t.Errorf("drain complete %v: want upstream_failed=%d", sum, failed)
	}
	if w := p.FindLog("the app failed requests during the drain: drainproxy answered them 502/503/504 itself; if the app stopped before drainproxy had drained, see the README's sidecar recipes", 0); w == nil || w["upstream_failed"] != float64(failed) {
		t.Errorf("no warning naming the %d failed requests:\n%s", failed, p.Logs())
	}
}
