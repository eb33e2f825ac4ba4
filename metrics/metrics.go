// Package metrics is drainproxy's Prometheus instrumentation: a private registry (never
// the global default one, so that nothing else in the process can add to or break what we
// export), the per-request counters fed by a drain.Observer, and collectors that read the
// drain's live counters and the other parts' counters at scrape time.
//
// Recording is built for the request path: the labelled counters a request touches are
// resolved once and kept in a fixed table, so Observe is a few atomic adds and does not
// allocate (see BenchmarkObserve). Everything else is read only when Prometheus scrapes.
package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
)

// Namespace prefixes every drainproxy metric.
const Namespace = "drainproxy"

// AccessLogCounters is what the access log reports about lines it could not write.
type AccessLogCounters interface {
	// Dropped is how many lines were dropped because the log's buffer was full.
	Dropped() uint64
	// WriteErrors is how many writes to the log's destination failed.
	WriteErrors() uint64
}

// RestartCounter is what child supervision reports.
type RestartCounter interface {
	// Restarts is how many times the supervised app was restarted.
	Restarts() uint64
}

// RollingRestartCounter is what zero-downtime app restarts (SIGHUP, POST /restart) report.
type RollingRestartCounter interface {
	// RollingRestarts is how many restarts switched to a new instance (ok), and how many
	// ended with the old instance still serving (failed).
	RollingRestarts() (ok, failed uint64)
}

// ConfigReloadCounter is what configuration reloads (SIGHUP) report.
type ConfigReloadCounter interface {
	// ConfigReloads is how many reloads applied a new configuration (ok), and how many
	// left the running one in service (failed: invalid, or a part could not be built).
	ConfigReloads() (ok, failed uint64)
	// LastConfigReload is whether the last reload succeeded (true before any), and when
	// the configuration in service was loaded (at start, or by the last good reload).
	LastConfigReload() (ok bool, loaded time.Time)
}

// Options configures New. Only Stats is required.
type Options struct {
	// Version is drainproxy's version, exported as drainproxy_build_info{version}.
	Version string
	// Stats returns the drain's live counters (drain.Drainer.Stats); read at scrape time.
	Stats func() drain.Stats
	// AccessLog, when set, is read for the access-log counters at scrape time (nil: they
	// are exported as 0, since no access log drops nothing).
	AccessLog AccessLogCounters
	// Child, when set, exports drainproxy_child_restarts_total (nil: not exported, since
	// no app is supervised).
	Child RestartCounter
	// RollingRestarts, when set, exports drainproxy_app_rolling_restarts_total{result="ok|failed"}
	// and, under its old name until the next release, drainproxy_app_reloads_total (nil:
	// not exported, since no app is supervised).
	RollingRestarts RollingRestartCounter
	// ConfigReloads, when set, exports drainproxy_config_reloads_total{result="ok|failed"},
	// drainproxy_config_last_reload_successful and
	// drainproxy_config_last_reload_success_timestamp_seconds.
	ConfigReloads ConfigReloadCounter
	// UpstreamHealthy, when set, exports drainproxy_upstream_healthy (nil: not exported).
	UpstreamHealthy func() bool
	// UpstreamRequests, when set, exports drainproxy_upstream_requests_inflight and
	// drainproxy_upstream_requests_queued: the requests holding a slot under
	// upstream.max_requests, and those waiting for one (nil: not exported).
	UpstreamRequests func() (inflight, queued int)
	// UpstreamProtocolErrors, when set, exports
	// drainproxy_upstream_protocol_errors_total{case} (stray upstream responses; nil: not
	// exported).
	UpstreamProtocolErrors *proxy.ProtocolErrors
	// RefusedForDescriptors, when set, exports
	// drainproxy_connections_refused_total{reason="out_of_descriptors"}: clients the public
	// listeners closed at once to keep file descriptors in reserve (nil: not exported).
	RefusedForDescriptors func() int64
	// Logger receives errors met while serving a scrape (zero: discard).
	Logger hclog.Logger
}

// Metrics owns the registry and the request-path counters. It is a drain.Observer.
type Metrics struct {
	reg *prometheus.Registry
	log hclog.Logger

	requests       *prometheus.CounterVec
	duration       prometheus.Histogram
	upstreamErrors *prometheus.CounterVec

	// byStatus[method][status-minStatus] is the requests_total child for that pair, made
	// on first use: a series appears once it has happened, as Prometheus expects.
	byStatus   [len(methods)][maxStatus - minStatus + 1]atomic.Pointer[counter]
	byReason   [len(reasons)]prometheus.Counter
	codeLabels [maxStatus - minStatus + 1]string
}

type counter struct{ prometheus.Counter }

// Status codes with a table slot; anything else (a handler that misbehaves) goes through
// WithLabelValues.
const (
	minStatus = 100
	maxStatus = 599
)

// methods are the request methods with their own label value. Any other method is
// counted as "other": clients choose the method, and a label they choose freely would let
// them create series without bound.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other"}

const methodOther = len(methods) - 1

func methodIndex(m string) int {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodPatch:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodOptions:
		return 6
	case http.MethodConnect:
		return 7
	case http.MethodTrace:
		return 8
	}
	return methodOther
}

// reasons are the upstream error reasons, exported from the start (as 0) so that a rate
// over them works before the first error.
var reasons = [...]string{
	proxy.ReasonRefused, proxy.ReasonReset, proxy.ReasonTimeout,
	proxy.ReasonBodyTooLarge, proxy.ReasonClientCanceled, proxy.ReasonBadRequest, proxy.ReasonOther,
	proxy.ReasonSendTimeout, proxy.ReasonClientBodyTimeout, proxy.ReasonReadTimeout, proxy.ReasonUpgradeIdleTimeout,
	proxy.ReasonOverloaded, proxy.ReasonWindowTimeout, proxy.ReasonShed,
}

// New builds the registry with every drainproxy metric and the Go and process collectors.
func New(opts Options) *Metrics {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "requests_total",
			Help:      "Requests answered, by status code and method (other for uncommon methods); upgraded connections count when they close, as 101.",
		}, []string{"code", "method"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "request_duration_seconds",
			Help:      "Time from receiving a request to the end of its response; upgraded connections are not included.",
			// The Prometheus defaults, plus 30s and 60s for slow upstreams (the default
			// response-header timeout is 60s).
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "upstream_errors_total",
			Help:      "Requests the proxy answered itself because the exchange with the upstream failed, by reason.",
		}, []string{"reason"}),
	}
	for i := range m.codeLabels {
		m.codeLabels[i] = strconv.Itoa(minStatus + i)
	}
	for i, r := range reasons {
		m.byReason[i] = m.upstreamErrors.WithLabelValues(r)
	}

	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which drainproxy build and Go version run.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)

	m.reg.MustRegister(
		m.requests, m.duration, m.upstreamErrors, buildInfo,
		newStatsCollector(opts.Stats),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	accessLog := opts.AccessLog
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "access_log_dropped_total",
			Help:      "Access log lines dropped because the log's buffer was full.",
		}, func() float64 {
			if accessLog == nil {
				return 0
			}
			return float64(accessLog.Dropped())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "access_log_write_errors_total",
			Help:      "Writes to the access log's destination that failed.",
		}, func() float64 {
			if accessLog == nil {
				return 0
			}
			return float64(accessLog.WriteErrors())
		}),
	)
	if child := opts.Child; child != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "child_restarts_total",
			Help:      "Times the supervised app was restarted.",
		}, func() float64 { return float64(child.Restarts()) }))
	}
	if rr := opts.RollingRestarts; rr != nil {
		m.registerResults("app_rolling_restarts_total",
			"Zero-downtime app restarts (SIGHUP or POST /restart), by result: ok switched to the new instance, failed left the old one serving.",
			rr.RollingRestarts)
		m.registerResults("app_reloads_total",
			"Deprecated, removed in the next release: the old name of drainproxy_app_rolling_restarts_total (it counts app restarts, not configuration reloads).",
			rr.RollingRestarts)
	}
	if cr := opts.ConfigReloads; cr != nil {
		m.registerResults("config_reloads_total",
			"Configuration reloads (SIGHUP), by result: ok applied the new configuration, failed left the running one in service (see the log).",
			cr.ConfigReloads)
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: Namespace,
				Name:      "config_last_reload_successful",
				Help:      "1 if the last configuration reload succeeded (or none was tried), 0 if it failed and an older configuration serves.",
			}, func() float64 {
				if ok, _ := cr.LastConfigReload(); ok {
					return 1
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: Namespace,
				Name:      "config_last_reload_success_timestamp_seconds",
				Help:      "When the configuration in service was loaded (start-up or the last successful reload), in Unix seconds.",
			}, func() float64 {
				_, at := cr.LastConfigReload()
				return float64(at.UnixNano()) / 1e9
			}),
		)
	}
	if requests := opts.UpstreamRequests; requests != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: Namespace,
				Name:      "upstream_requests_inflight",
				Help:      "Requests in flight to the upstream, counted against upstream.max_requests.",
			}, func() float64 { n, _ := requests(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: Namespace,
				Name:      "upstream_requests_queued",
				Help:      "Requests waiting for a slot under upstream.max_requests (up to upstream.queue_timeout, then 503).",
			}, func() float64 { _, n := requests(); return float64(n) }),
		)
	}
	if pe := opts.UpstreamProtocolErrors; pe != nil {
		for i, c := range proxy.StrayCases {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Namespace: Namespace, Name: "upstream_protocol_errors_total",
				Help:        "Stray upstream responses seen, by case: idle (bytes on a pooled connection), early (a response before the request was written), unrequested (bytes after a complete response). Each starts or extends a quarantine without connection reuse.",
				ConstLabels: prometheus.Labels{"case": c},
			}, func() float64 { return float64(pe.Counts()[i]) }))
		}
	}
	if refused := opts.RefusedForDescriptors; refused != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "connections_refused_total",
			Help:        "Client connections the public listeners closed at once, by reason: out_of_descriptors (accepted into the top eighth of the open-files limit, or accepted on the spare descriptor when none was left), to keep descriptors for the upstream, health checks and the admin listener.",
			ConstLabels: prometheus.Labels{"reason": "out_of_descriptors"},
		}, func() float64 { return float64(refused()) }))
	}
	if healthy := opts.UpstreamHealthy; healthy != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "upstream_healthy",
			Help:      "1 while the upstream passes its health check, 0 otherwise.",
		}, func() float64 {
			if healthy() {
				return 1
			}
			return 0
		}))
	}
	return m
}

// registerResults exports counts as the counter name{result="ok|failed"}.
func (m *Metrics) registerResults(name, help string, counts func() (ok, failed uint64)) {
	for _, result := range []string{"ok", "failed"} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: name, Help: help, ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 {
			ok, failed := counts()
			if result == "ok" {
				return float64(ok)
			}
			return float64(failed)
		}))
	}
}

// Registry is the private registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (or another format the
// scraper negotiates).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      scrapeErrorLog{m.log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Observe implements drain.Observer: it counts the finished exchange. It does not allocate
// once the method and status pair has been seen.
func (m *Metrics) Observe(x *drain.Exchange) {
	status := x.Status
	if status == 0 {
		status = http.StatusOK // the handler wrote nothing; net/http answered 200
	}
	mi := methodIndex(x.Request.Method)
	if status >= minStatus && status <= maxStatus {
		slot := &m.byStatus[mi][status-minStatus]
		c := slot.Load()
		if c == nil {
			c = &counter{m.requests.WithLabelValues(m.codeLabels[status-minStatus], methods[mi])}
			slot.Store(c) // a racing Store holds the same child: WithLabelValues returns one per pair
		}
		c.Inc()
	} else {
		m.requests.WithLabelValues(strconv.Itoa(status), methods[mi]).Inc()
	}
	if !x.Upgraded {
		m.duration.Observe(x.Duration.Seconds())
	}
	if r := x.UpstreamError; r != "" {
		m.upstreamError(r).Inc()
	}
}

func (m *Metrics) upstreamError(reason string) prometheus.Counter {
	for i, r := range reasons {
		if r == reason {
			return m.byReason[i]
		}
	}
	return m.upstreamErrors.WithLabelValues(reason)
}

// statsCollector exports the drain's counters from one snapshot per scrape, so that they
// agree with each other.
type statsCollector struct {
	stats                                              func() drain.Stats
	inflight, upgraded, conns, phase, drained, aborted *prometheus.Desc
	drainUpstreamFailed                                *prometheus.Desc
	cut                                                *prometheus.Desc // by "how"
	drainUnserved                                      *prometheus.Desc
}

func newStatsCollector(stats func() drain.Stats) *statsCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, nil, nil)
	}
	return &statsCollector{
		stats: stats,
		inflight: desc("inflight_requests",
			"Requests being served now, including those whose connection was upgraded, until it closes."),
		upgraded: desc("upgraded_connections",
			"Upgraded connections (WebSocket and others) open now."),
		conns: desc("open_connections",
			"Client connections open now on the public listeners, upgraded ones not included."),
		phase: desc("drain_phase",
			"Lifecycle phase: 0 starting, 1 ready, 2 draining, 3 stopping, 4 stopped."),
		drained: desc("drained_requests_total",
			"Requests that completed after the drain began."),
		aborted: desc("aborted_requests_total",
			"Requests still in flight when the drain's grace period ended, closed by force."),
		drainUpstreamFailed: desc("drain_upstream_failed_total",
			"Requests after the drain began that drainproxy answered itself with 502, 503 or 504 because the app did not."),
		cut: prometheus.NewDesc(Namespace+"_drain_cut_total",
			"Exchanges the drain's deadline cut, by how: before_head (no response sent), mid_response, tunnel (an upgraded connection such as a WebSocket closed).",
			[]string{"how"}, nil),
		drainUnserved: desc("drain_unserved_connections_total",
			"Connections the kernel had accepted that the drain closed without serving (reset as the listeners stopped)."),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inflight, c.upgraded, c.conns, c.phase, c.drained, c.aborted, c.drainUpstreamFailed, c.cut, c.drainUnserved} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(s.InflightRequests))
	ch <- prometheus.MustNewConstMetric(c.upgraded, prometheus.GaugeValue, float64(s.Upgraded))
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.OpenConnections))
	ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, float64(s.Phase))
	ch <- prometheus.MustNewConstMetric(c.drained, prometheus.CounterValue, float64(s.Drained))
	ch <- prometheus.MustNewConstMetric(c.aborted, prometheus.CounterValue, float64(s.Aborted))
	ch <- prometheus.MustNewConstMetric(c.drainUpstreamFailed, prometheus.CounterValue, float64(s.UpstreamFailed))
	ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(s.CutBeforeHead), drain.CutBeforeHead)
	ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(s.CutMidResponse), drain.CutMidResponse)
	ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(s.UpgradesClosed), drain.CutTunnel)
	ch <- prometheus.MustNewConstMetric(c.drainUnserved, prometheus.CounterValue, float64(s.Unserved))
}

// scrapeErrorLog adapts hclog to promhttp's error log.
type scrapeErrorLog struct{ log hclog.Logger }

func (l scrapeErrorLog) Println(v ...any) {
	l.log.Error("serving metrics", "error", fmt.Sprint(v...))
}
