package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/accesslog"
	"github.com/drainproxy/drainproxy/admin"
	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/gcfloor"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/metrics"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/supervise"
	"github.com/drainproxy/drainproxy/tlsfront"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes; the README lists them.
const (
	exitOK      = 0 // clean drain
	exitFailure = 1 // runtime failure, or a drain that was forced or aborted something
	exitUsage   = 2 // bad flags or configuration
)

// run is the whole program; main only maps it to the process. Canceling ctx starts a
// drain, as SIGTERM does. stdout carries the access log (by default), stderr the logs.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := config.Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy: %v\n", err)
		return exitUsage
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stderr, "drainproxy %s\n", version)
		return exitOK
	}
	log := newLogger(cfg.Log, stderr)
	defer routeStdlog(log)()
	if cfg.CheckOnly {
		log.Info("configuration is valid", "source", cfg.Source)
		return exitOK
	}
	setMemoryLimit(log) // before the floor, which stays under the limit
	defer startGCFloor(cfg.Limits.GCHeapFloorBytes, log)()

	healthOpts := health.Options{
		Upstream:           cfg.Upstream.URL,
		Path:               cfg.HealthCheck.Path,
		Interval:           cfg.HealthCheck.Interval,
		Timeout:            cfg.HealthCheck.Timeout,
		HealthyThreshold:   cfg.HealthCheck.HealthyThreshold,
		UnhealthyThreshold: cfg.HealthCheck.UnhealthyThreshold,
		Logger:             log.Named("health"),
	}
	checker := health.New(healthOpts)
	// Supervised mode (-- COMMAND): drainproxy runs the app, is ready once it answers, and
	// stops it only after the proxy has drained.
	gate, stopApp := checker.WaitHealthy, (func(context.Context) error)(nil)
	var sup *supervise.App
	var p *proxy.Proxy // built below; a restart switches it to the new instance
	if len(cfg.Upstream.Command) > 0 {
		sup, err = supervise.NewApp(supervise.AppOptions{Options: supervise.Options{
			Command: cfg.Upstream.Command, Upstream: cfg.Upstream.URL, Stdout: stdout, Stderr: stderr,
			OutputPrefix: cfg.App.OutputPrefix, StopSignal: cfg.App.StopSignal,
			StopTimeout: cfg.App.StopTimeout, StartTimeout: cfg.App.StartTimeout,
			WaitReady: checker.WaitHealthy, Check: checker.CheckNow,
			Restart: cfg.App.Restart, MaxRestarts: cfg.App.MaxRestarts, RestartWindow: cfg.App.RestartWindow,
			ForwardSignals: cfg.App.ForwardSignals, Logger: log.Named("app"),
		},
			// Zero-downtime restart (SIGHUP, POST /restart): the new instance is checked
			// as the upstream is, then the proxy and the health checker move to it.
			CheckAt: func(u *url.URL) func(context.Context) error {
				o := healthOpts
				o.Upstream = u
				return health.New(o).CheckNow
			},
			Switch: func(u *url.URL) (supervise.Retired, error) {
				old, err := p.Switch(u)
				if err != nil {
					return nil, err
				}
				checker.SetUpstream(u)
				return old, nil
			},
			Grace: cfg.Drain.Grace,
		})
		if err != nil {
			log.Error("cannot run the app", "error", err.Error())
			return exitUsage
		}
		defer sup.Close()
		gate, stopApp = sup.Gate, sup.Stop
	}
	// HTTPS listeners: certificates from files or ACME, HTTP/2, redirects (package tlsfront).
	front, err := tlsfront.New(tlsfront.Options{
		Listeners: cfg.Listeners, IdleClose: cfg.Drain.IdleClose, Logger: log.Named("tls"),
	})
	if err != nil {
		log.Error("cannot set up TLS", "error", err.Error())
		return exitUsage
	}
	defer front.Close()
	gate = front.Gate(gate) // and ready only once every ACME domain has a certificate
	d := drain.New(drain.Options{
		Delay:        cfg.Drain.Delay,
		Grace:        cfg.Drain.Grace,
		IdleClose:    cfg.Drain.IdleClose,
		FlushTimeout: cfg.Drain.FlushTimeout,
		Logger:       log.Named("drain"),
		Gate:         gate, // ready only once the upstream has answered
		StopApp:      stopApp,
	})
	d.Observe(checker) // requests that cannot reach the upstream count as failed checks
	if sup != nil {
		sup.AbortOn(d.Requested()) // a drain wins over a restart that has not switched yet
	}
	// Trap signals before anything slow, so that a SIGTERM during start-up still drains.
	stopSignals := d.TrapSignals()
	defer stopSignals()

	p, err = proxy.New(proxy.Options{
		Upstream:              cfg.Upstream.URL,
		HostHeader:            cfg.Proxy.HostHeader,
		TrustedProxies:        cfg.Proxy.TrustedProxies,
		DialTimeout:           cfg.Upstream.DialTimeout,
		ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout,
		IdleConns:             cfg.Upstream.IdleConns,
		IdleConnTimeout:       cfg.Upstream.IdleConnTimeout,
		MaxRequestBodyBytes:   cfg.Limits.MaxRequestBodyBytes,
		Logger:                log.Named("proxy"),
	})
	if err != nil {
		log.Error("cannot build the proxy", "error", err.Error())
		return exitUsage
	}
	defer p.CloseIdleConnections()

	// Opened before the listeners: a path we cannot write stops us before we serve.
	accessLog, err := newAccessLog(cfg.Log, p.Upstream, stdout, stderr, log.Named("access-log"))
	if err != nil {
		log.Error("cannot open the access log", "error", err.Error())
		return exitFailure
	}
	stopLogSignals := trapLogSignals(accessLog)
	defer stopLogSignals()

	var upstream http.Handler = p
	if sup != nil {
		upstream = sup.Guard(p) // 503 + Retry-After while the app is down
	}
	addrs := make([]string, 0, len(cfg.Listeners))
	for _, l := range cfg.Listeners {
		ln, err := listener.Listen(ctx, l.Address, cfg.Limits.MaxConnections)
		if err != nil {
			log.Error("cannot listen", "error", err.Error())
			return exitFailure
		}
		defer ln.Close()
		srv := newServer(d.Handler(front.Handler(l, upstream)), cfg.Limits, log)
		public, err := front.Serve(l, ln, srv, d)
		if err != nil {
			log.Error("cannot serve HTTPS", "error", err.Error())
			return exitFailure
		}
		d.AddServer("public", srv, public)
		addrs = append(addrs, ln.Addr().String())
	}
	if err := front.Start(ctx); err != nil {
		log.Error("cannot manage certificates", "error", err.Error())
		return exitFailure
	}
	stopReload := trapReload(front, sup, log) // SIGHUP: certificate files, app restart
	defer stopReload()

	// The admin listener is not added to the drain: it answers until the drain is over
	// (so /readyz says 503 and /metrics can be scraped throughout) and closes after it.
	adminAddr := "off"
	if cfg.Admin.Address != "" {
		m := newMetrics(d, checker, accessLog, sup, log.Named("metrics"))
		d.Observe(m)
		adm, err := admin.Start(admin.Options{
			Address: cfg.Admin.Address, Token: cfg.Admin.Token, AllowedHosts: cfg.Admin.AllowedHosts,
			Drainer: d, Health: checker, Metrics: m.Handler(), Restarter: restarter(sup), App: supervisedApp(sup),
			Upstream: p.Upstream(), CurrentUpstream: p.Upstream, ConfigSource: cfg.Source, Version: version,
			Logger: log.Named("admin"),
		})
		if err != nil {
			log.Error("cannot start the admin listener", "error", err.Error())
			return exitFailure
		}
		defer adm.Close()
		adminAddr = adm.Addr()
	}
	d.Workers.Go("health", checker.Run)
	if accessLog != nil {
		d.Observe(accessLog)
		d.Workers.Go("access-log", accessLog.Run)
	}

	log.Info("drainproxy starting", "version", version, "listen", strings.Join(addrs, ","),
		"admin", adminAddr, "upstream", p.Upstream(), "access_log", cfg.Log.AccessLog, "config", cfg.Source, "pid", os.Getpid())
	if sup == nil {
		return d.Run(ctx).ExitCode()
	}
	if err := sup.Start(d.Drain); err != nil {
		log.Error("cannot start the app", "error", err.Error())
		return exitFailure
	}
	return sup.ExitCode(d.Run(ctx).ExitCode())
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

// trapLogSignals makes SIGUSR1 reopen the access log file (logrotate's create mode), and
// makes SIGPIPE harmless: a stdout or stderr whose reader went away then fails writes with
// EPIPE, which the access log counts, instead of killing the process. Both are trapped even
// without an access log file, since by default either signal would end the process. stop
// undoes it and waits for the goroutine that reads the signals.
func trapLogSignals(accessLog *accesslog.Log) (stop func()) {
	return sigtrap.Handle(func(s os.Signal) {
		if s == syscall.SIGUSR1 && accessLog != nil {
			accessLog.Reopen()
		}
	}, syscall.SIGUSR1, syscall.SIGPIPE)
}

// newMetrics builds the Prometheus metrics over the parts that exist: no access log and no
// supervised app are nil here, and must stay nil interfaces in metrics.Options.
func newMetrics(d *drain.Drainer, checker *health.Checker, accessLog *accesslog.Log, sup *supervise.App, log hclog.Logger) *metrics.Metrics {
	opts := metrics.Options{Version: version, Stats: d.Stats, UpstreamHealthy: checker.Healthy, Logger: log}
	if accessLog != nil {
		opts.AccessLog = accessLog
	}
	if sup != nil {
		opts.Child = sup
		opts.Reloads = sup
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

// trapReload gives SIGHUP its meanings through one handler: re-read the certificate files
// (when there are some) and, in supervised mode, restart the app without downtime. A
// SIGHUP during a restart is logged and ignored: the restart in progress already brings
// up the app as it is now. Without a supervised app this is tlsfront's own trap. stop
// undoes it and waits for the goroutine that reads the signals.
func trapReload(front *tlsfront.Front, sup *supervise.App, log hclog.Logger) (stop func()) {
	if sup == nil {
		return front.TrapReload()
	}
	return sigtrap.Handle(func(os.Signal) {
		front.ReloadStatic() // logs the outcome; nothing without certificate files
		if err := sup.Restart("signal SIGHUP"); err != nil {
			log.Warn("SIGHUP: not restarting the app", "reason", err.Error())
		}
	}, syscall.SIGHUP)
}

// newServer builds the public HTTP server. Read-header and idle timeouts bound what a slow
// or silent client can hold; read and write timeouts stay off by default so that long
// uploads and long proxied responses (downloads, streams) work.
func newServer(h http.Handler, lim config.Limits, log hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog: log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{
			InferLevels: true, ForceLevel: hclog.Debug,
		}),
		// OPTIONS * is the app's to answer; net/http would answer it itself otherwise.
		DisableGeneralOptionsHandler: true,
	}
}

// routeStdlog sends what libraries write with the standard log package through log (as
// JSON when the logs are JSON) at warning level, instead of as plain text into the log
// stream: net/http's Transport writes "Unsolicited response received on idle HTTP
// channel" there when an upstream sends bytes nobody asked for, and every http.Server
// without an ErrorLog writes there too. It returns what undoes it.
func routeStdlog(log hclog.Logger) (undo func()) {
	out, flags, prefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	stdlog.SetOutput(log.Named("stdlog").StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}))
	stdlog.SetFlags(0) // hclog writes the time
	stdlog.SetPrefix("")
	return func() {
		stdlog.SetOutput(out)
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
	}
}

// startGCFloor keeps the garbage collector from collecting a small heap dozens of times a
// second under load (package gcfloor), unless GOGC in the environment says how it should
// run. It returns what undoes it.
func startGCFloor(floor int64, log hclog.Logger) (stop func()) {
	if floor <= 0 {
		return func() {}
	}
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Debug("GOGC is set, so the heap floor is off", "GOGC", v)
		return func() {}
	}
	return gcfloor.Start(uint64(floor)).Stop
}

// newLogger builds the root logger: text for a terminal, JSON for machines.
func newLogger(c config.Log, w io.Writer) hclog.Logger {
	jsonFormat := c.Format == "json" || (c.Format == "auto" && !isTerminal(w))
	return hclog.New(&hclog.LoggerOptions{
		Name:       "drainproxy",
		Level:      hclog.LevelFromString(c.Level),
		Output:     w,
		JSONFormat: jsonFormat,
	})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
