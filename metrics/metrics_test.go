package metrics

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/badupstream"
	"github.com/drainproxy/drainproxy/proxy"
)

// scrape serves the metrics handler once and parses the text it returns.
func scrape(t testing.TB, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, rec.Body)
	}
	return families
}

// value is the value of the series of family name with exactly the given labels, or -1
// when there is none.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

type logCounts struct{ dropped, writeErrors atomic.Uint64 }

func (l *logCounts) Dropped() uint64     { return l.dropped.Load() }
func (l *logCounts) WriteErrors() uint64 { return l.writeErrors.Load() }

type restarts struct{ n atomic.Uint64 }

func (r *restarts) Restarts() uint64 { return r.n.Load() }

func exchange(method string, status int) *drain.Exchange {
	return &drain.Exchange{Request: httptest.NewRequest(method, "/", nil), Status: status, Duration: 20 * time.Millisecond}
}

func TestObserveCounts(t *testing.T) {
	var stats atomic.Value
	stats.Store(drain.Stats{})
	m := New(Options{Version: "v1.2.3", Stats: func() drain.Stats { return stats.Load().(drain.Stats) }})

	for range 3 {
		m.Observe(exchange("GET", 200))
	}
	m.Observe(exchange("POST", 0)) // nothing written: net/http sent 200
	m.Observe(exchange("BREW", 418))
	m.Observe(exchange("PROPFIND", 207))
	m.Observe(exchange("GET", 999)) // outside the table
	refused := exchange("GET", 502)
	refused.UpstreamError = proxy.ReasonRefused
	m.Observe(refused)
	odd := exchange("GET", 502)
	odd.UpstreamError = "something_new"
	m.Observe(odd)
	ws := exchange("GET", 101)
	ws.Upgraded, ws.Duration = true, time.Hour
	m.Observe(ws)

	f := scrape(t, m)
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"drainproxy_requests_total", []string{"code", "200", "method", "GET"}, 3},
		{"drainproxy_requests_total", []string{"code", "200", "method", "POST"}, 1},
		{"drainproxy_requests_total", []string{"code", "418", "method", "other"}, 1},
		{"drainproxy_requests_total", []string{"code", "207", "method", "other"}, 1},
		{"drainproxy_requests_total", []string{"code", "999", "method", "GET"}, 1},
		{"drainproxy_requests_total", []string{"code", "502", "method", "GET"}, 2},
		{"drainproxy_requests_total", []string{"code", "101", "method", "GET"}, 1},
		{"drainproxy_requests_total", []string{"code", "404", "method", "GET"}, -1}, // never seen, never exported
		{"drainproxy_upstream_errors_total", []string{"reason", "refused"}, 1},
		{"drainproxy_upstream_errors_total", []string{"reason", "reset"}, 0}, // exported from the start
		{"drainproxy_upstream_errors_total", []string{"reason", "something_new"}, 1},
		// Every request but the upgraded one.
		{"drainproxy_request_duration_seconds", nil, 9},
		{"drainproxy_build_info", []string{"version", "v1.2.3", "goversion", runtime.Version()}, 1},
		{"drainproxy_access_log_dropped_total", nil, 0},
		{"drainproxy_child_restarts_total", nil, -1}, // not supervising
		{"drainproxy_upstream_healthy", nil, -1},
	} {
		if got := value(f, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if sum := f["drainproxy_request_duration_seconds"].Metric[0].Histogram.GetSampleSum(); sum > 1 {
		t.Errorf("duration sum %vs includes the upgraded connection's hour", sum)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if f[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}
}

func TestScrapeReadsLiveCounters(t *testing.T) {
	var stats atomic.Value
	stats.Store(drain.Stats{Phase: drain.PhaseReady, InflightRequests: 4, Upgraded: 2, OpenConnections: 7})
	logs, child := &logCounts{}, &restarts{}
	var healthy atomic.Bool
	m := New(Options{
		Stats:           func() drain.Stats { return stats.Load().(drain.Stats) },
		AccessLog:       logs,
		Child:           child,
		UpstreamHealthy: healthy.Load,
	})
	f := scrape(t, m)
	want := map[string]float64{
		"drainproxy_drain_phase": 1, "drainproxy_inflight_requests": 4, "drainproxy_upgraded_connections": 2,
		"drainproxy_open_connections": 7, "drainproxy_drained_requests_total": 0, "drainproxy_aborted_requests_total": 0,
		"drainproxy_access_log_dropped_total": 0, "drainproxy_access_log_write_errors_total": 0,
		"drainproxy_child_restarts_total": 0, "drainproxy_upstream_healthy": 0,
	}
	for name, w := range want {
		if got := value(f, name); got != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}

	stats.Store(drain.Stats{Phase: drain.PhaseStopped, Drained: 12, Aborted: 6, Unserved: 2,
		CutBeforeHead: 1, CutMidResponse: 2, UpgradesClosed: 3})
	logs.dropped.Store(5)
	logs.writeErrors.Store(1)
	child.n.Store(2)
	healthy.Store(true)
	f = scrape(t, m)
	want = map[string]float64{
		"drainproxy_drain_phase": 4, "drainproxy_inflight_requests": 0, "drainproxy_drained_requests_total": 12,
		"drainproxy_aborted_requests_total": 6, "drainproxy_drain_unserved_connections_total": 2,
		"drainproxy_access_log_dropped_total":      5,
		"drainproxy_access_log_write_errors_total": 1, "drainproxy_child_restarts_total": 2,
		"drainproxy_upstream_healthy": 1,
	}
	for name, w := range want {
		if got := value(f, name); got != w {
			t.Errorf("after changes: %s = %v, want %v", name, got, w)
		}
	}
	for how, w := range map[string]float64{drain.CutBeforeHead: 1, drain.CutMidResponse: 2, drain.CutTunnel: 3} {
		if got := value(f, "drainproxy_drain_cut_total", "how", how); got != w {
			t.Errorf("drainproxy_drain_cut_total{how=%q} = %v, want %v", how, got, w)
		}
	}
}

// Each Metrics has its own registry: two in one process do not collide, and nothing is
// registered with the global default registry.
func TestPrivateRegistry(t *testing.T) {
	stats := func() drain.Stats { return drain.Stats{} }
	a, b := New(Options{Stats: stats}), New(Options{Stats: stats})
	a.Observe(exchange("GET", 200))
	if got := value(scrape(t, b), "drainproxy_requests_total", "code", "200", "method", "GET"); got != -1 {
		t.Errorf("b saw a's request: %v", got)
	}
	rec := httptest.NewRecorder()
	promhttp.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if got := rec.Body.String(); strings.Contains(got, "drainproxy_") {
		t.Errorf("the default registry exports drainproxy metrics:\n%s", got)
	}
}

// Once a method and status pair has been seen, counting a request does not allocate.
func TestObserveDoesNotAllocate(t *testing.T) {
	m := New(Options{Stats: func() drain.Stats { return drain.Stats{} }})
	x := exchange("GET", 200)
	m.Observe(x)
	failed := exchange("POST", 502)
	failed.UpstreamError = proxy.ReasonReset
	m.Observe(failed)
	if n := testing.AllocsPerRun(1000, func() { m.Observe(x); m.Observe(failed) }); n != 0 {
		t.Errorf("Observe allocates %v times per call", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := New(Options{Stats: func() drain.Stats { return drain.Stats{} }})
	x := exchange(http.MethodGet, 200)
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(x)
	}
}

// BenchmarkObserveParallel is Observe from many request goroutines at once, all on the
// same series: the worst case for contention.
func BenchmarkObserveParallel(b *testing.B) {
	m := New(Options{Stats: func() drain.Stats { return drain.Stats{} }})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		x := exchange(http.MethodGet, 200)
		for pb.Next() {
			m.Observe(x)
		}
	})
}

type reloadCounts struct{ ok, failed atomic.Uint64 }

func (r *reloadCounts) RollingRestarts() (ok, failed uint64) { return r.ok.Load(), r.failed.Load() }

// drainproxy_app_rolling_restarts_total has one series per result, read at scrape time,
// and is absent without a supervised app; its old name, drainproxy_app_reloads_total, says
// the same until it is removed.
func TestScrapeAppRollingRestarts(t *testing.T) {
	stats := func() drain.Stats { return drain.Stats{} }
	for _, name := range []string{"drainproxy_app_rolling_restarts_total", "drainproxy_app_reloads_total"} {
		if got := value(scrape(t, New(Options{Stats: stats})), name, "result", "ok"); got != -1 {
			t.Fatalf("%s exported without a supervised app: %v", name, got)
		}
	}
	r := &reloadCounts{}
	m := New(Options{Stats: stats, RollingRestarts: r})
	r.ok.Store(3)
	r.failed.Store(1)
	f := scrape(t, m)
	for _, name := range []string{"drainproxy_app_rolling_restarts_total", "drainproxy_app_reloads_total"} {
		for result, want := range map[string]float64{"ok": 3, "failed": 1} {
			if got := value(f, name, "result", result); got != want {
				t.Errorf("%s{result=%q} = %v, want %v", name, result, got, want)
			}
		}
	}
}

// TestScrapeUpstreamProtocolErrors: a stray response behind a complete one (the malicious
// upstream's second-response-same-write) is exported by case, the others at 0.
func TestScrapeUpstreamProtocolErrors(t *testing.T) {
	up, err := badupstream.Start()
	if err != nil {
		t.Fatal(err)
	}
	up.Coalesce = true
	t.Cleanup(func() { up.Close() })
	p, err := proxy.New(proxy.Options{Upstream: &url.URL{Scheme: "http", Host: up.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	req := httptest.NewRequest("GET", "/second-response-same-write", nil)
	req.Header.Set(badupstream.NonceHeader, "a1")
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("GET: %d %s", rec.Code, rec.Body)
	}
	stats := func() drain.Stats { return drain.Stats{} }
	if got := value(scrape(t, New(Options{Stats: stats})), "drainproxy_upstream_protocol_errors_total", "case", "idle"); got != -1 {
		t.Fatalf("exported without a proxy's counts: %v", got)
	}
	f := scrape(t, New(Options{Stats: stats, UpstreamProtocolErrors: p.ProtocolErrors()}))
	for c, want := range map[string]float64{"idle": 0, "early": 0, "unrequested": 1} {
		if got := value(f, "drainproxy_upstream_protocol_errors_total", "case", c); got != want {
			t.Errorf("drainproxy_upstream_protocol_errors_total{case=%q} = %v, want %v", c, got, want)
		}
	}
}

// The descriptor reserve's refusals are exported when a source is given, and not otherwise.
func TestConnectionsRefusedForDescriptors(t *testing.T) {
	stats := func() drain.Stats { return drain.Stats{} }
	const name = "drainproxy_connections_refused_total"
	if got := value(scrape(t, New(Options{Stats: stats})), name, "reason", "out_of_descriptors"); got != -1 {
		t.Fatalf("exported without a source: %v", got)
	}
	var n int64 = 7
	f := scrape(t, New(Options{Stats: stats, RefusedForDescriptors: func() int64 { return n }}))
	if got := value(f, name, "reason", "out_of_descriptors"); got != 7 {
		t.Errorf(`%s{reason="out_of_descriptors"} = %v, want 7`, name, got)
	}
}
