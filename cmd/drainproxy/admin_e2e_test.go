package main

// End-to-end tests of the admin listener: readiness, metrics, POST /drain and the token,
// on the real binary.

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/drainproxy/drainproxy/standin"
)

// adminClient never reuses connections, so that each request is its own exchange.
var adminClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// adminDo sends a request to base+path with an optional bearer token and returns the
// status, headers and body.
func adminDo(t testing.TB, method, url, token string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// adminWaitReadyz polls /readyz until it answers status with a body that starts with
// prefix.
func adminWaitReadyz(t testing.TB, p *proc, status int, prefix string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/readyz", "")
		if code == status && strings.HasPrefix(body, prefix) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q; want %d %q...", code, body, status, prefix)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminScrape fetches /metrics and parses it with the Prometheus text parser.
func adminScrape(t testing.TB, p *proc, token string) map[string]*dto.MetricFamily {
	t.Helper()
	code, h, body := adminDo(t, "GET", "http://"+p.Admin+"/metrics", token)
	if code != 200 {
		t.Fatalf("/metrics = %d %q", code, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q, want the text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return families
}

// adminMetric is the value of the series of family name with exactly the given label
// pairs; 0 when the family has no such series (a counter not yet touched). The family must
// exist.
func adminMetric(t testing.TB, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := families[name]
	if f == nil {
		t.Fatalf("/metrics has no %s", name)
		return 0
	}
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		match := true
		for _, l := range m.Label {
			found := false
			for i := 0; i < len(labels); i += 2 {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// adminServeAt serves h on exactly addr until stop is called or the test ends.
func adminServeAt(t testing.TB, addr string, h http.Handler) (stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return func() { srv.Close() }
}

// adminConfigFile writes src to a config file and returns its path.
func adminConfigFile(t testing.TB, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "drainproxy.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Readiness follows start -> ready -> upstream down -> up -> drain, and POST /drain ends
// the process the way SIGTERM does: the same drain steps and exit code 0.
func TestAdminReadinessAcrossUpstreamOutageAndDrain(t *testing.T) {
	upAddr := freeAddr(t)
	cfg := adminConfigFile(t, `
upstream {
  url = "http://`+upAddr+`"
}
health_check {
  path = "/"
  interval = "100ms"
  timeout = "1s"
  healthy_threshold = 2
  unhealthy_threshold = 2
}
drain {
  delay = "5s"
}
`)
	p := launch(t, "-config", cfg, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0")
	p.WaitLog("drainproxy starting", 10*time.Second)
	if p.Admin == "" || p.Admin == "off" {
		t.Fatalf("the starting line names no admin address: %q", p.Admin)
	}

	// start: nothing listens at the upstream address.
	adminWaitReadyz(t, p, 503, "starting: upstream "+upAddr+": connection refused")
	if code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/healthz", ""); code != 200 {
		t.Errorf("/healthz during start-up = %d %q", code, body)
	}

	// ready: the upstream answers.
	stop := adminServeAt(t, upAddr, standin.Handler())
	p.WaitLog("ready", 10*time.Second)
	adminWaitReadyz(t, p, 200, "ready\n")
	if code, _, _ := adminDo(t, "GET", p.URL()+"/", ""); code != 200 {
		t.Fatalf("proxied GET / = %d", code)
	}

	// down: the upstream goes away; requests fail and are counted.
	stop()
	adminWaitReadyz(t, p, 503, "upstream unhealthy: upstream "+upAddr+": ")
	if code, _, _ := adminDo(t, "GET", p.URL()+"/", ""); code != http.StatusBadGateway {
		t.Fatalf("proxied GET / with the upstream down = %d, want 502", code)
	}
	m := adminScrape(t, p, "")
	if v := adminMetric(t, m, "drainproxy_upstream_errors_total", "reason", "refused"); v < 1 {
		t.Errorf("upstream_errors_total{reason=refused} = %v after a refused request", v)
	}
	if v := adminMetric(t, m, "drainproxy_requests_total", "code", "502", "method", "GET"); v < 1 {
		t.Errorf("requests_total{code=502} = %v", v)
	}
	if v := adminMetric(t, m, "drainproxy_upstream_healthy"); v != 0 {
		t.Errorf("upstream_healthy = %v while down", v)
	}
	if v := adminMetric(t, m, "drainproxy_drain_phase"); v != 1 {
		t.Errorf("drain_phase = %v; an upstream outage is not a drain", v)
	}

	// up: the upstream serves again on the same port.
	adminServeAt(t, upAddr, standin.Handler())
	adminWaitReadyz(t, p, 200, "ready\n")

	// drain: on demand, exactly as SIGTERM would.
	if code, h, _ := adminDo(t, "GET", "http://"+p.Admin+"/drain", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /drain = %d (Allow %q), want 405", code, h.Get("Allow"))
	}
	adminWaitReadyz(t, p, 200, "ready\n") // GET did not drain
	if code, _, body := adminDo(t, "POST", "http://"+p.Admin+"/drain", ""); code != http.StatusAccepted {
		t.Fatalf("POST /drain = %d %q, want 202", code, body)
	}
	adminWaitReadyz(t, p, 503, "draining\n")
	if code, _, _ := adminDo(t, "POST", "http://"+p.Admin+"/drain", ""); code != http.StatusAccepted {
		t.Errorf("a second POST /drain = %d, want 202 (idempotent)", code)
	}
	if v := adminMetric(t, adminScrape(t, p, ""), "drainproxy_drain_phase"); v != 2 {
		t.Errorf("drain_phase = %v during the delay, want 2 (draining)", v)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after POST /drain, want 0", code)
	}
	started := p.WaitLog("drain started", time.Second)
	if started["reason"] != "admin POST /drain" {
		t.Errorf("drain started with reason %v", started["reason"])
	}
	for _, step := range []string{"drain delay over", "stopped accepting", "in-flight requests finished", "drain complete"} {
		if p.FindLog(step, time.Second) == nil {
			t.Errorf("the drain skipped %q, which SIGTERM's drain logs", step)
		}
	}
}

// The counters move with traffic and with a drain: in-flight, drained, phase.
func TestAdminMetricsFollowTrafficAndDrain(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/", standin.Handler())
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
			io.WriteString(w, standin.Hello)
		case <-r.Context().Done():
		}
	})
	up := "http://" + serveUpstream(t, mux)
	p := startProxy(t, "-upstream", up, "-drain-delay", "5s", "-grace", "10s",
		"-access-log", filepath.Join(t.TempDir(), "access.log"))

	m := adminScrape(t, p, "")
	if v := adminMetric(t, m, "drainproxy_drain_phase"); v != 1 {
		t.Errorf("drain_phase = %v once ready, want 1", v)
	}
	if v := adminMetric(t, m, "drainproxy_upstream_healthy"); v != 1 {
		t.Errorf("upstream_healthy = %v once ready", v)
	}
	if v := adminMetric(t, m, "drainproxy_build_info", "version", "dev", "goversion", goVersionOf(t, m)); v != 1 {
		t.Errorf("build_info = %v", v)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if m[name] == nil {
			t.Errorf("/metrics has no %s: the Go and process collectors are missing", name)
		}
	}
	for _, name := range []string{"drainproxy_access_log_dropped_total", "drainproxy_access_log_write_errors_total"} {
		if v := adminMetric(t, m, name); v != 0 {
			t.Errorf("%s = %v", name, v)
		}
	}
	if m["drainproxy_child_restarts_total"] != nil {
		t.Error("drainproxy_child_restarts_total is exported without a supervised app")
	}

	const n = 5
	for range n {
		if code, _, _ := adminDo(t, "GET", p.URL()+"/", ""); code != 200 {
			t.Fatalf("GET / = %d", code)
		}
	}
	m = adminScrape(t, p, "")
	if v := adminMetric(t, m, "drainproxy_requests_total", "code", "200", "method", "GET"); v != n {
		t.Errorf("requests_total{200,GET} = %v after %d requests", v, n)
	}
	if v := adminMetric(t, m, "drainproxy_request_duration_seconds"); v != n {
		t.Errorf("request_duration_seconds count = %v after %d requests", v, n)
	}
	if v := adminMetric(t, m, "drainproxy_inflight_requests"); v != 0 {
		t.Errorf("inflight_requests = %v with nothing in flight", v)
	}

	// One request held at the upstream is in flight.
	held := make(chan int, 1)
	go func() {
		resp, err := adminClient.Get(p.URL() + "/hold")
		if err != nil {
			held <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not reach the upstream")
	}
	if v := adminMetric(t, adminScrape(t, p, ""), "drainproxy_inflight_requests"); v != 1 {
		t.Errorf("inflight_requests = %v with one request held", v)
	}

	// The drain begins; requests during the delay and the held one count as drained.
	if code, _, _ := adminDo(t, "POST", "http://"+p.Admin+"/drain", ""); code != http.StatusAccepted {
		t.Fatalf("POST /drain = %d", code)
	}
	p.WaitLog("drain started", 5*time.Second)
	for range 2 {
		if code, _, _ := adminDo(t, "GET", p.URL()+"/", ""); code != 200 {
			t.Fatalf("GET / during the delay = %d", code)
		}
	}
	close(release)
	if code := <-held; code != 200 {
		t.Fatalf("the held request got %d, want 200", code)
	}
	m = adminScrape(t, p, "")
	for _, c := range []struct {
		name string
		want float64
	}{
		{"drainproxy_drain_phase", 2},
		{"drainproxy_drained_requests_total", 3},
		{"drainproxy_inflight_requests", 0},
		{"drainproxy_aborted_requests_total", 0},
	} {
		if v := adminMetric(t, m, c.name); v != c.want {
			t.Errorf("during the drain: %s = %v, want %v", c.name, v, c.want)
		}
	}
	if v := adminMetric(t, m, "drainproxy_requests_total", "code", "200", "method", "GET"); v != n+3 {
		t.Errorf("requests_total{200,GET} = %v, want %d", v, n+3)
	}

	// SIGTERM after POST /drain is the orchestrator's usual signal, not a second request:
	// it does not force, and the drain ends cleanly after its delay.
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if sum := p.WaitLog("drain complete", time.Second); sum["drained"] != 3.0 {
		t.Errorf("summary %v: want drained=3", sum)
	}
}

// goVersionOf reads the goversion label of build_info (the binary's Go version).
func goVersionOf(t testing.TB, m map[string]*dto.MetricFamily) string {
	t.Helper()
	f := m["drainproxy_build_info"]
	if f == nil || len(f.Metric) != 1 {
		t.Fatalf("build_info: %v", f)
	}
	for _, l := range f.Metric[0].Label {
		if l.GetName() == "goversion" {
			return l.GetValue()
		}
	}
	t.Fatal("build_info has no goversion label")
	return ""
}

// With a token, everything but the probes needs it; a wrong one is refused.
func TestAdminToken(t *testing.T) {
	const token = "d2b7c1e0f3a94c58b6e1"
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	cfg := adminConfigFile(t, `
upstream {
  url = "`+up+`"
}
admin {
  address = "127.0.0.1:0"
  token_file = "`+tokenFile+`"
}
`)
	p := startProxy(t, "-config", cfg, "-listen", "127.0.0.1:0")
	base := "http://" + p.Admin

	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", "wrong", 401},
		{"GET", "/status", "wrong", 401},
		{"POST", "/drain", "", 401},
		{"POST", "/drain", "wrong", 401},
		{"GET", "/drain", token, 405},
		{"GET", "/status", token, 200},
	} {
		code, h, _ := adminDo(t, c.method, base+c.path, c.token)
		if code != c.want {
			t.Errorf("%s %s (token %q) = %d, want %d", c.method, c.path, c.token, code, c.want)
		}
		if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s: 401 without WWW-Authenticate: Bearer", c.method, c.path)
		}
	}
	if v := adminMetric(t, adminScrape(t, p, token), "drainproxy_drain_phase"); v != 1 {
		t.Errorf("drain_phase = %v: a refused POST /drain started a drain", v)
	}
	if strings.Contains(p.Logs(), token) {
		t.Error("the token appears in the log")
	}
	if code, _, _ := adminDo(t, "POST", base+"/drain", token); code != http.StatusAccepted {
		t.Fatalf("POST /drain with the token = %d", code)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// An admin port already taken is a one-line error naming the port, and exit code 1.
func TestAdminPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	code, out := runBinary(t, "-upstream", startUpstream(t), "-listen", "127.0.0.1:0",
		"-admin", ln.Addr().String(), "-log-format", "text")
	if code != 1 || !strings.Contains(out, "port "+port+" is already in use") {
		t.Fatalf("exit %d, output:\n%s\nwant exit 1 and a message naming port %s", code, out, port)
	}
}

// -admin off starts no admin listener, and the starting line says so.
func TestAdminOff(t *testing.T) {
	p := startProxy(t, "-upstream", startUpstream(t), "-admin", "off")
	if p.Admin != "off" {
		t.Fatalf("starting line admin=%q, want off", p.Admin)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// Supervising an app, /metrics counts its restarts.
func TestAdminChildRestartsMetric(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	marker := filepath.Join(t.TempDir(), "crashed-once")
	p := startProxy(t, supArgs(supConfig(t, `restart = "on-failure"`), port,
		testappBin, "-exit-once", marker, "-exit-after", "300ms", "-exit-code", "3")...)
	supKillOnCleanup(t, supAppPid(t, p))
	if v := adminMetric(t, adminScrape(t, p, ""), "drainproxy_child_restarts_total"); v != 0 {
		t.Errorf("child_restarts_total = %v before any restart", v)
	}
	p.WaitLog("app exited, restarting it", 10*time.Second)
	waitFor(t, 10*time.Second, func() bool {
		return adminMetric(t, adminScrape(t, p, ""), "drainproxy_child_restarts_total") == 1
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}
