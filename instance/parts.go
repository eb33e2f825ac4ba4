package instance

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/accesslog"
	"github.com/drainproxy/drainproxy/admin"
	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/h1serve"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/internal/clientconn"
	"github.com/drainproxy/drainproxy/metrics"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/supervise"
)

// The parts of an instance as the configuration makes them, at start (New) and when a
// reload rebuilds one (reload.go): each function here is the one place that reads its
// part's settings.

// healthOptions are the health check settings of cfg for upstream u.
func healthOptions(cfg *config.Config, u *url.URL, log hclog.Logger) health.Options {
	return health.Options{
		Upstream:           u,
		Path:               cfg.HealthCheck.Path,
		Interval:           cfg.HealthCheck.Interval,
		Timeout:            cfg.HealthCheck.Timeout,
		HealthyThreshold:   cfg.HealthCheck.HealthyThreshold,
		UnhealthyThreshold: cfg.HealthCheck.UnhealthyThreshold,
		GRPC:               cfg.HealthCheck.GRPC,
		GRPCService:        cfg.HealthCheck.GRPCService,
		Logger:             log.Named("health"),
	}
}

// buildProxy builds the proxy as cfg says, sending requests to target and counting stray
// upstream responses in protocolErrors (nil: a new count). overload is the cap on
// requests in flight, shared by the proxies one after another.
func buildProxy(cfg *config.Config, target *url.URL, overload *proxy.Overload, protocolErrors *proxy.ProtocolErrors, log hclog.Logger) (*proxy.Proxy, error) {
	overload.Set(cfg.Upstream.MaxRequests, cfg.Upstream.QueueTimeout)
	return proxy.New(proxy.Options{
		Upstream:               target,
		HostHeader:             cfg.Proxy.HostHeader,
		TrustedProxies:         cfg.Proxy.TrustedProxies,
		DialTimeout:            cfg.Upstream.DialTimeout,
		ResponseHeaderTimeout:  cfg.Upstream.ResponseHeaderTimeout,
		IdleConns:              cfg.Upstream.IdleConns,
		IdleConnTimeout:        cfg.Upstream.IdleConnTimeout,
		MaxRequestBodyBytes:    cfg.Limits.MaxRequestBodyBytes,
		SendTimeout:            cfg.Limits.SendTimeout,
		ClientBodyTimeout:      cfg.Limits.ClientBodyTimeout,
		ReadTimeout:            cfg.Upstream.ReadTimeout,
		UpstreamSendTimeout:    cfg.Upstream.SendTimeout,
		UpgradeIdleTimeout:     cfg.Limits.UpgradeIdleTimeout,
		WindowTimeout:          cfg.Limits.H2WindowTimeout,
		Overload:               overload,
		MaxResponseHeaderBytes: cfg.Upstream.MaxResponseHeaderBytes,
		DisableKeepAlives:      !cfg.Upstream.KeepAlive,
		ProtocolErrors:         protocolErrors,
		Logger:                 log.Named("proxy"),
	})
}

// newAccessLog opens the access log the configuration asks for; nil when it is off.
// upstream is the proxy's current upstream, which a zero-downtime restart changes.
func newAccessLog(c config.Log, upstream func() string, stdout, stderr io.Writer, log hclog.Logger) (*accesslog.Log, error) {
	if c.AccessLog == accesslog.Off {
		return nil, nil
	}
	return accesslog.New(accesslog.Options{
		Destination: c.AccessLog,
		Format:      c.AccessLogFormat,
		Upstream:    upstream(),
		Buffer:      c.AccessLogBuffer,
		WhenFull:    c.AccessLogWhenFull,
		Logger:      log,
		Stdout:      stdout,
		Stderr:      stderr,
		// Lines follow a zero-downtime restart to the new instance.
		CurrentUpstream: upstream,
	})
}

// newH1Server is newServer on drainproxy's own HTTP/1 loop (server.engine = "h1serve"),
// made from newServer's settings so that a limit is set in one place for both engines.
func newH1Server(h http.Handler, lim config.Limits, log hclog.Logger) *h1serve.Server {
	s := newServer(h, lim, log)
	return &h1serve.Server{
		Handler:                      s.Handler,
		ReadHeaderTimeout:            s.ReadHeaderTimeout,
		ReadTimeout:                  s.ReadTimeout,
		WriteTimeout:                 s.WriteTimeout,
		IdleTimeout:                  s.IdleTimeout,
		MaxHeaderBytes:               s.MaxHeaderBytes,
		ErrorLog:                     s.ErrorLog,
		DisableGeneralOptionsHandler: s.DisableGeneralOptionsHandler,
		ConnContext:                  s.ConnContext,
		// net/http ends a request's context at the client's FIN, and the proxy then asks
		// the kernel whether the client half-closed (answered) or left (proxy/halfclose.go).
		CancelOnFIN: true,
	}
}

// newMetrics builds the Prometheus metrics over the parts that exist: no access log and no
// supervised app are nil here, and must stay nil interfaces in metrics.Options.
func newMetrics(d *drain.Drainer, checker *health.Checker, accessLog *logSwitch, sup *supervise.App, reloads *reloadStats, protocolErrors *proxy.ProtocolErrors, overload *proxy.Overload, publics *publicListeners, version string, log hclog.Logger) *metrics.Metrics {
	opts := metrics.Options{Version: version, Stats: d.Stats, UpstreamHealthy: checker.Healthy, ConfigReloads: reloads, Logger: log,
		UpstreamProtocolErrors: protocolErrors, UpstreamRequests: overload.Inflight,
		RefusedForDescriptors: publics.refusedForDescriptors}
	opts.AccessLog = accessLog
	if sup != nil {
		opts.Child = sup
		opts.RollingRestarts = sup
	}
	return metrics.New(opts)
}

// restarter is sup for admin.Options, or a nil interface when no app is supervised.
func restarter(sup *supervise.App) admin.Restarter {
	if sup == nil {
		return nil
	}
	return sup
}

// supervisedApp is sup for admin.Options, or a nil interface when no app is supervised.
func supervisedApp(sup *supervise.App) admin.App {
	if sup == nil {
		return nil
	}
	return sup
}

// newServer builds the public HTTP server. Read-header and idle timeouts bound what a slow
// or silent client can hold; read and write timeouts stay off by default so that long
// uploads and long proxied responses (downloads, streams) work: the proxy's progress
// timeouts (send_timeout, client_body_timeout) bound a client that stops instead.
func newServer(h http.Handler, lim config.Limits, log hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.RequestReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog: log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{
			InferLevels: true, ForceLevel: hclog.Debug,
		}),
		// OPTIONS * is the app's to answer; net/http would answer it itself otherwise.
		DisableGeneralOptionsHandler: true,
		// The proxy asks the kernel about a request's client when net/http ends its
		// context: a half-closed client still gets its answer (proxy/halfclose.go).
		ConnContext: clientconn.ConnContext,
	}
}

// progressInterval is drain.progress_interval for drain.Options, where 0 would mean the
// default: "0s" in the config turns the progress lines off.
func progressInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// terminationLog is the file the drain's summary goes to: drain.termination_log, where
// "auto" is Kubernetes' /dev/termination-log if it exists (kubelet mounts it into every
// container; elsewhere we write nothing).
func terminationLog(setting string) string {
	if setting != config.TerminationLogAuto {
		return setting
	}
	if _, err := os.Stat(config.DefaultTerminationLog); err != nil {
		return ""
	}
	return config.DefaultTerminationLog
}
