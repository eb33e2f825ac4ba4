package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/accesslog"
	"github.com/drainproxy/drainproxy/admin"
	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/gcfloor"
	"github.com/drainproxy/drainproxy/h1serve"
	"github.com/drainproxy/drainproxy/h2serve"
	"github.com/drainproxy/drainproxy/handover"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/internal/clientconn"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/metrics"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/supervise"
	"github.com/drainproxy/drainproxy/tlsfront"
)

// version and commit are set at build time (scripts/release, scripts/image) with
// -ldflags "-X main.version=v1.2.3 -X main.commit=0123abc". A binary built without them
// (go install ...@v1.2.3, go build) takes what the Go toolchain recorded instead.
var (
	version = "dev"
	commit  = ""
)

func init() { version, commit = buildVersion(version, commit, debug.ReadBuildInfo) }

// buildVersion fills in, from the build information the Go toolchain records, what
// -ldflags did not set: the module version (go install ...@v1.2.3) and the VCS revision
// (go build in a git checkout).
func buildVersion(version, commit string, read func() (*debug.BuildInfo, bool)) (string, string) {
	info, ok := read()
	if !ok {
		info = &debug.BuildInfo{}
	}
	if version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && commit == "" {
			commit = s.Value[:min(len(s.Value), 12)]
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return version, commit
}

// Exit codes; the README lists them.
const (
	exitOK      = 0 // clean drain
	exitFailure = 1 // runtime failure, or a drain that was forced or aborted something
	exitUsage   = 2 // bad flags or configuration
)

// run is the whole program; main only maps it to the process. Canceling ctx starts a
// drain, as SIGTERM does. getenv is the environment: settings as DRAINPROXY_*, GOGC,
// GOMEMLIMIT, and what systemd passes (LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC), which
// package handover reads and never changes. stdout carries the access log (by default),
// stderr the logs.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if code, ok := subcommand(ctx, args, stdout, stderr); ok { // probe, install
		return code
	}
	cfg, err := config.ParseEnv(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy: %v\n", err)
		return exitUsage
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stderr, "drainproxy %s (commit %s)\n", version, commit)
		return exitOK
	}
	log := newLogger(cfg.Log, stderr)
	defer routeStdlog(log)()
	if cfg.CheckOnly {
		log.Info("configuration is valid", "source", cfg.Source)
		return exitOK
	}
	setMemoryLimit(getenv, log) // before the floor, which stays under the limit
	defer startGCFloor(cfg.Limits.GCHeapFloorBytes, getenv, log)()

	// Sockets from systemd or from the process this one upgrades, SIGUSR2, sd_notify.
	upgradeTimeout := 30 * time.Second
	if len(cfg.Upstream.Command) > 0 {
		upgradeTimeout += cfg.App.StartTimeout
	}
	upg := handover.New(handover.Options{Logger: log, UpgradeTimeout: upgradeTimeout, Getenv: getenv})
	defer upg.Stop()
	notify := upg.Notifier()
	started := cfg // as configured: what a reload compares with (reload.go)
	if cfg, err = appOnFreshPort(cfg, upg.Upgraded()); err != nil {
		log.Error("cannot start the app", "error", err.Error())
		return exitFailure
	}

	healthOpts := healthOptions(cfg, cfg.Upstream.URL, log)
	checker := health.New(healthOpts)
	var checkOpts atomic.Pointer[health.Options] // a reload may change them
	checkOpts.Store(&healthOpts)
	// Supervised mode (-- COMMAND): drainproxy runs the app, is ready once it answers, and
	// stops it only after the proxy has drained.
	gate, stopApp := checker.WaitHealthy, (func(context.Context) error)(nil)
	var sup *supervise.App
	var proxies *proxySwitch // built below; a restart switches its proxy to the new instance
	if len(cfg.Upstream.Command) > 0 {
		sup, err = supervise.NewApp(supervise.AppOptions{Options: supervise.Options{
			Command: cfg.Upstream.Command, Upstream: cfg.Upstream.URL, Stdout: stdout, Stderr: stderr,
			Env:          handover.Environ(os.Environ()), // not systemd's main process, nor upgraded
			OutputPrefix: cfg.App.OutputPrefix, StopSignal: cfg.App.StopSignal,
			StopTimeout: cfg.App.StopTimeout, StartTimeout: cfg.App.StartTimeout,
			WaitReady: checker.WaitHealthy, Check: checker.CheckNow,
			Restart: cfg.App.Restart, MaxRestarts: cfg.App.MaxRestarts, RestartWindow: cfg.App.RestartWindow,
			ForwardSignals: cfg.App.ForwardSignals, Logger: log.Named("app"),
		},
			// Zero-downtime restart (SIGHUP, POST /restart): the new instance is checked
			// as the upstream is, then the proxy and the health checker move to it.
			CheckAt: func(u *url.URL) func(context.Context) error {
				o := *checkOpts.Load()
				o.Upstream = u
				return health.New(o).CheckNow
			},
			Switch: func(u *url.URL) (supervise.Retired, error) {
				old, err := proxies.switchUpstream(u)
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
	// HTTP/2 on every listener (h2 by ALPN, h2c on plain ones): GOAWAY at drain start.
	h2 := h2serve.New(h2serve.Options{
		MaxConcurrentStreams: uint32(cfg.Limits.H2MaxConcurrentStreams), Logger: log.Named("http2"),
	})
	front, err := tlsfront.New(tlsfront.Options{
		Listeners: cfg.Listeners, HTTP2: h2, Logger: log.Named("tls"),
	})
	if err != nil {
		log.Error("cannot set up TLS", "error", err.Error())
		return exitUsage
	}
	defer front.Close()
	gate = front.Gate(gate) // and ready only once every ACME domain has a certificate
	var adm *admin.Server   // started below, once the listeners are
	var publics *publicListeners
	releaseAdmin := make(chan struct{}) // the admin listener accepts once closed (an upgrade's new process: once ready)
	var d *drain.Drainer
	d = drain.New(drain.Options{
		Delay:     cfg.Drain.Delay,
		Grace:     cfg.Drain.Grace,
		IdleClose: cfg.Drain.IdleClose,
		// readiness stays 200 this long into the drain (KEP-1669 terminating endpoints)
		ReadinessFailDelay: cfg.Drain.ReadinessFailDelay,
		FlushTimeout:       cfg.Drain.FlushTimeout,
		Logger:             log.Named("drain"),
		// Issue 25: drain.delay = "auto", progress lines, the termination log.
		DelayAuto: cfg.Drain.DelayAuto, Quiet: cfg.Drain.Quiet, DelayMin: cfg.Drain.DelayMin, DelayMax: cfg.Drain.DelayMax,
		ProgressInterval: progressInterval(cfg.Drain.ProgressInterval),
		TerminationLog:   terminationLog(cfg.Drain.TerminationLog),
		// Ready only once the upstream has answered; then a process this one upgrades
		// may drain, and systemd hears READY=1. A process an upgrade started accepts on
		// the sockets it shares with that one only from here on (publics.hold): until
		// its own app answers, every connection goes to the process still serving.
		Gate: func(ctx context.Context) error {
			if err := gate(ctx); err != nil {
				return err
			}
			if err := publics.serveHeld(); err != nil {
				return err
			}
			close(releaseAdmin)
			closeAdmin := func() {}
			if adm != nil {
				closeAdmin = adm.Close
			}
			upg.Ready(d, closeAdmin)
			return nil
		},
		StopApp: stopApp,
	})
	d.OnDrainStart(h2.Drain)
	d.OnStopAccepting(func(context.Context) { h2.StopAccepting() })
	d.Observe(checker) // requests that cannot reach the upstream count as failed checks
	if sup != nil {
		sup.AbortOn(d.Requested()) // a drain wins over a restart that has not switched yet
	}
	// Trap signals before anything slow, so that a SIGTERM during start-up still drains.
	stopSignals := d.TrapSignals()
	defer stopSignals()

	overload := proxy.NewOverload(cfg.Upstream.MaxRequests, cfg.Upstream.QueueTimeout)
	p, err := buildProxy(cfg, cfg.Upstream.URL, overload, nil, log)
	if err != nil {
		log.Error("cannot build the proxy", "error", err.Error())
		return exitUsage
	}
	proxies = newProxySwitch(p)
	defer func() { proxies.current().CloseIdleConnections() }()

	// Opened before the listeners: a path we cannot write stops us before we serve.
	accessLog, err := newAccessLog(cfg.Log, proxies.upstream, stdout, stderr, log.Named("access-log"))
	if err != nil {
		log.Error("cannot open the access log", "error", err.Error())
		return exitFailure
	}
	logs := &logSwitch{} // a reload may open another access log
	stopLogSignals := trapLogSignals(logs)
	defer stopLogSignals()

	var upstream http.Handler = proxies
	if sup != nil {
		guard := proxy.AppGuard(sup, proxies) // 503 + Retry-After while the app is down
		// The guard's own 503s get a request id too (access log, X-Request-Id upstream).
		upstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			guard.ServeHTTP(w, proxies.current().WithRequestID(r))
		})
	}
	publics = &publicListeners{upg: upg, d: d, front: front, h2: h2, handler: upstream, limits: cfg.Limits,
		server: cfg.Server, drain: cfg.Drain, log: log, byAddr: map[string]*listener.Listener{}, served: map[string]net.Listener{}}
	if upg.Upgraded() {
		publics.hold()
	}
	addrs := make([]string, 0, len(cfg.Listeners))
	for _, l := range cfg.Listeners {
		addr, err := publics.open(ctx, l)
		if err != nil {
			// A systemd socket that matches no listener is the usual cause of an address
			// in use under socket activation: say so before failing.
			upg.CloseUnused()
			log.Error("cannot listen", "error", err.Error())
			return exitFailure
		}
		addrs = append(addrs, addr)
	}
	warnLoopbackInContainer(addrs, getenv, log)
	if err := front.Start(ctx); err != nil {
		log.Error("cannot manage certificates", "error", err.Error())
		return exitFailure
	}

	// The admin listener is not added to the drain: it answers until the drain is over
	// (so /readyz says 503 and /metrics can be scraped throughout) and closes after it,
	// or once an upgrade handed it to the next process.
	adminAddr := "off"
	reloads := newReloadStats()
	if cfg.Admin.Address != "" {
		m := newMetrics(d, checker, logs, sup, reloads, proxies.current().ProtocolErrors(), overload, log.Named("metrics"))
		d.Observe(m)
		adm, err = startAdmin(upg, releaseAdmin, admin.Options{
			Address: cfg.Admin.Address, Token: cfg.Admin.Token, AllowedHosts: cfg.Admin.AllowedHosts,
			Drainer: d, Health: checker, Metrics: m.Handler(), Restarter: restarter(sup), App: supervisedApp(sup),
			Upstream: p.Upstream(), CurrentUpstream: proxies.upstream, ConfigSource: cfg.Source, Version: version,
			Logger: log.Named("admin"),
		})
		if err != nil {
			log.Error("cannot start the admin listener", "error", err.Error())
			return exitFailure
		}
		defer adm.Close()
		adminAddr = adm.Addr()
	}
	upg.CloseUnused()
	d.Workers.Go("health", checker.Run)
	d.Observe(logs)
	logs.swap(accessLog, d.Workers)
	d.Workers.Go("watchdog", notify.RunWatchdog)

	// SIGHUP reloads the configuration (reload.go), SIGUSR2 upgrades (package handover).
	lv := &live{
		args: args, getenv: getenv, stdout: stdout, stderr: stderr, log: log, started: started, running: cfg,
		proxies: proxies, logs: logs, checker: checker, checkOpts: &checkOpts, front: front, sup: sup, adm: adm,
		d: d, notify: notify, stats: reloads, publics: publics, overload: overload,
	}
	stopReload := lv.trapReload()
	defer stopReload()
	if slices.Contains(cfg.App.ForwardSignals, syscall.SIGUSR2) {
		log.Info("SIGUSR2 goes to the app (app.forward_signals), so it does not upgrade drainproxy")
	} else {
		stopUpgrade := upg.TrapUpgrade()
		defer stopUpgrade()
	}
	go func() { // ends with the drain, which Run always reaches
		<-d.Requested()
		notify.Stopping("draining")
	}()

	log.Info("drainproxy starting", "version", version, "listen", strings.Join(addrs, ","),
		"admin", adminAddr, "upstream", p.Upstream(), "access_log", cfg.Log.AccessLog, "server_engine", cfg.Server.Engine,
		"config", cfg.Source, "pid", os.Getpid())
	if sup == nil {
		return d.Run(ctx).ExitCode()
	}
	if err := sup.Start(d.Drain); err != nil {
		log.Error("cannot start the app", "error", err.Error())
		return exitFailure
	}
	return sup.ExitCode(d.Run(ctx).ExitCode())
}

// warnLoopbackInContainer says so when every listener is on loopback inside a container,
// where nothing outside the container's network namespace (docker run -p, a Service) can
// reach it: connections through a published port are reset, and the admin's /readyz still
// says ready. Containers are recognised by the files Docker and Podman create and by the
// variable Kubernetes sets.
func warnLoopbackInContainer(addrs []string, getenv func(string) string, log hclog.Logger) {
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsLoopback() {
			return
		}
	}
	// Only the container's own process (PID 1: the image's entrypoint, or an exec'ing
	// wrapper) warns: a drainproxy started as a child, as the tests start it on a machine
	// that is itself a container, listens on loopback on purpose.
	if os.Getpid() != 1 {
		return
	}
	inContainer := getenv("KUBERNETES_SERVICE_HOST") != ""
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			inContainer = true
		}
	}
	if inContainer && len(addrs) > 0 {
		log.Warn("listening on loopback only, inside a container: published ports and Services cannot reach it; listen on all interfaces, e.g. -listen :8080 (the image's default)",
			"listen", strings.Join(addrs, ","))
	}
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
func trapLogSignals(accessLog *logSwitch) (stop func()) {
	return sigtrap.Handle(func(s os.Signal) {
		if s == syscall.SIGUSR1 {
			accessLog.Reopen()
		}
	}, syscall.SIGUSR1, syscall.SIGPIPE)
}

// newMetrics builds the Prometheus metrics over the parts that exist: no access log and no
// supervised app are nil here, and must stay nil interfaces in metrics.Options.
func newMetrics(d *drain.Drainer, checker *health.Checker, accessLog *logSwitch, sup *supervise.App, reloads *reloadStats, protocolErrors *proxy.ProtocolErrors, overload *proxy.Overload, log hclog.Logger) *metrics.Metrics {
	opts := metrics.Options{Version: version, Stats: d.Stats, UpstreamHealthy: checker.Healthy, ConfigReloads: reloads, Logger: log,
		UpstreamProtocolErrors: protocolErrors, UpstreamRequests: overload.Inflight}
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
		ReadTimeout:       lim.ReadTimeout,
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

// newH1Server is newServer on drainproxy's own HTTP/1 loop (server.engine = "h1serve"):
// the same limits and timeouts, the same error log, OPTIONS * for the app, the same
// ConnContext.
func newH1Server(h http.Handler, lim config.Limits, log hclog.Logger) *h1serve.Server {
	return &h1serve.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog: log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{
			InferLevels: true, ForceLevel: hclog.Debug,
		}),
		DisableGeneralOptionsHandler: true,
		// As newServer: a FIN ends the request's context, and the proxy asks the kernel
		// whether the client half-closed (answered) or left (proxy/halfclose.go).
		CancelOnFIN: true,
		ConnContext: clientconn.ConnContext,
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
func startGCFloor(floor int64, getenv func(string) string, log hclog.Logger) (stop func()) {
	if floor <= 0 {
		return func() {}
	}
	if v := getenv("GOGC"); v != "" {
		log.Debug("GOGC is set, so the heap floor is off", "GOGC", v)
		return func() {}
	}
	return gcfloor.Start(uint64(floor)).Stop
}

// newLogger builds the root logger: text for a terminal, JSON for machines.
func newLogger(c config.Log, w io.Writer) hclog.Logger {
	jsonFormat := c.Format == "json" || (c.Format == "auto" && !isTerminal(w))
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "drainproxy",
		Level:      hclog.LevelFromString(c.Level),
		Output:     w,
		JSONFormat: jsonFormat,
	})
	if !jsonFormat {
		return escapingLogger{log}
	}
	return log
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// withFreshPort is u on a port free a moment ago, on the same host.
func withFreshPort(u *url.URL) (*url.URL, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(u.Hostname(), "0"))
	if err != nil {
		return nil, fmt.Errorf("find a free port on %s for this process's app: %w", u.Hostname(), err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	fresh := *u
	fresh.Host = net.JoinHostPort(u.Hostname(), port)
	return &fresh, nil
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

// appOnFreshPort is cfg, with the supervised app on a fresh port in a process an upgrade
// started: the previous process's app still serves on the configured one, so this one's
// instance starts elsewhere, as a zero-downtime restart does.
func appOnFreshPort(cfg *config.Config, upgraded bool) (*config.Config, error) {
	if !upgraded || len(cfg.Upstream.Command) == 0 {
		return cfg, nil
	}
	u, err := withFreshPort(cfg.Upstream.URL)
	if err != nil {
		return nil, err
	}
	moved := *cfg
	moved.Upstream.URL = u
	return &moved, nil
}

// startAdmin starts the admin listener on its socket (from systemd, the process being
// upgraded, or bound now); in a process an upgrade started it accepts only once release
// is closed, when this process is ready.
func startAdmin(upg *handover.Handover, release <-chan struct{}, opts admin.Options) (*admin.Server, error) {
	ln, err := upg.Socket(opts.Address, "admin", admin.Listen) // or FileDescriptorName=admin
	if err != nil {
		return nil, err
	}
	opts.Listener = ln
	if upg.Upgraded() {
		opts.Listener = handover.Hold(ln, release)
	}
	return admin.Start(opts)
}
