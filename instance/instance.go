// Package instance is one running drainproxy. New turns a configuration into its parts,
// in one place per setting (the proxy, the access log, the health checker, the supervised
// app, the TLS front door, the drainer, the listeners); Run starts them and runs the drain
// (drain.Drainer.Run) as the one sequence that ends them; Reload applies a configuration
// read anew to the running instance, as SIGHUP does (reload.go).
//
// An instance reads nothing of the process it runs in: the command line, the environment
// and the output streams are Options, so that a test runs a whole drainproxy in-process.
// What is the process's by nature stays so: signals (SIGTERM, SIGHUP, SIGUSR1, SIGUSR2),
// the runtime's memory limit and the garbage collector's heap floor.
package instance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
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
	"github.com/drainproxy/drainproxy/h2serve"
	"github.com/drainproxy/drainproxy/handover"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/supervise"
	"github.com/drainproxy/drainproxy/tlsfront"
)

// Options are what an instance takes from the process that runs it.
type Options struct {
	// Args is the command line without the program name: each reload parses it again
	// (with the file it names) as the process did at start.
	Args []string
	// Getenv is the environment: settings as DRAINPROXY_*, GOGC, GOMEMLIMIT, AUTOMEMLIMIT,
	// and what systemd passes (LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC), which package
	// handover reads and never changes. nil reads an empty environment.
	Getenv func(string) string
	// Environ is the environment a supervised app starts with (os.Environ() of the
	// process; nil: none); what systemd meant for drainproxy alone is taken out of it.
	Environ []string
	// Stdout carries the access log (by default) and a supervised app's output; Stderr
	// the app's errors and, when Logger is nil, the logs.
	Stdout, Stderr io.Writer
	// Logger is the root logger (NewLogger); nil builds it from the configuration.
	Logger hclog.Logger
	// Version is what /status, the metrics and the start line say this build is.
	Version string
}

// ErrConfig marks an error of New that the configuration causes: the program's exit code
// is then 2 (bad usage), not 1.
var ErrConfig = errors.New("the configuration cannot be served")

// configError is err marked as the configuration's (ErrConfig).
func configError(what string, err error) error {
	return configErr{fmt.Errorf("%s: %w", what, err)}
}

type configErr struct{ error }

func (e configErr) Is(target error) bool { return target == ErrConfig }
func (e configErr) Unwrap() error        { return e.error }

// Instance is one drainproxy, built (New) and then run (Run) once.
type Instance struct {
	opts    Options
	cfg     *config.Config // as running: the app on a fresh port in a process an upgrade started
	started *config.Config // as configured: what a reload compares with (reload.go)
	log     hclog.Logger
	undo    []func() // what New set up, undone last first when Run ends or New fails

	upg       *handover.Handover
	notify    *handover.Notifier
	checker   *health.Checker
	checkOpts atomic.Pointer[health.Options] // a reload may change them
	sup       *supervise.App                 // nil unless an app is supervised
	// gate is what readiness waits for: the upstream's (or the supervised app's) first
	// good answer, and a certificate for every ACME domain.
	gate      func(context.Context) error
	h2        *h2serve.Server
	front     *tlsfront.Front
	d         *drain.Drainer
	overload  *proxy.Overload
	proxies   *proxySwitch // a restart switches its proxy to the new app instance
	accessLog *accesslog.Log
	logs      *logSwitch // a reload may open another access log
	publics   *publicListeners
	reloads   *reloadStats
	reloader  *reloader

	adm *admin.Server // started by Run; nil without an admin listener
	// releaseAdmin is closed once ready: the admin listener of a process an upgrade
	// started accepts from then on.
	releaseAdmin chan struct{}
}

// New builds every part of a drainproxy from cfg. Nothing serves yet: Run opens the
// listeners. Signals are trapped from here on, so that a SIGTERM during start-up still
// drains once Run runs. On an error what was built is undone; errors.Is(err, ErrConfig)
// tells an error of the configuration.
func New(cfg *config.Config, opts Options) (_ *Instance, err error) {
	if opts.Getenv == nil {
		opts.Getenv = func(string) string { return "" }
	}
	if opts.Logger == nil {
		opts.Logger = NewLogger(cfg.Log, opts.Stderr)
	}
	i := &Instance{opts: opts, started: cfg, log: opts.Logger, releaseAdmin: make(chan struct{}), reloads: newReloadStats()}
	defer func() {
		if err != nil {
			i.close()
		}
	}()
	log := i.log
	WarnRenamed(log, cfg)
	setMemoryLimit(opts.Getenv, log) // before the floor, which stays under the limit
	i.undo = append(i.undo, startGCFloor(cfg.Runtime.GCHeapFloorBytes, opts.Getenv, log))

	// Sockets from systemd or from the process this one upgrades, SIGUSR2, sd_notify.
	upgradeTimeout := 30 * time.Second
	if len(cfg.Upstream.Command) > 0 {
		upgradeTimeout += cfg.App.StartTimeout
	}
	i.upg = handover.New(handover.Options{Logger: log, UpgradeTimeout: upgradeTimeout, Getenv: opts.Getenv})
	i.undo = append(i.undo, i.upg.Stop)
	i.notify = i.upg.Notifier()
	if cfg, err = appOnFreshPort(cfg, i.upg.Upgraded()); err != nil {
		return nil, fmt.Errorf("cannot start the app: %w", err)
	}
	i.cfg = cfg

	healthOpts := healthOptions(cfg, cfg.Upstream.URL, log)
	i.checker = health.New(healthOpts)
	i.checkOpts.Store(&healthOpts)
	i.gate = i.checker.WaitHealthy
	if len(cfg.Upstream.Command) > 0 {
		if err := i.newApp(); err != nil {
			return nil, configError("cannot run the app", err)
		}
	}
	// HTTPS listeners: certificates from files or ACME, HTTP/2, redirects (package tlsfront).
	// HTTP/2 on every listener (h2 by ALPN, h2c on plain ones): GOAWAY at drain start.
	i.h2 = h2serve.New(h2serve.Options{
		MaxConcurrentStreams: uint32(cfg.Limits.H2MaxConcurrentStreams), Logger: log.Named("http2"),
	})
	i.front, err = tlsfront.New(tlsfront.Options{
		Listeners: cfg.Listeners, HTTP2: i.h2, Logger: log.Named("tls"),
	})
	if err != nil {
		return nil, configError("cannot set up TLS", err)
	}
	i.undo = append(i.undo, i.front.Close)
	i.gate = i.front.Gate(i.gate) // and ready only once every ACME domain has a certificate
	i.newDrainer()

	i.overload = proxy.NewOverload(cfg.Upstream.MaxRequests, cfg.Upstream.QueueTimeout)
	p, err := buildProxy(cfg, cfg.Upstream.URL, i.overload, nil, log)
	if err != nil {
		return nil, configError("cannot build the proxy", err)
	}
	i.proxies = newProxySwitch(p)
	i.undo = append(i.undo, func() { i.proxies.current().CloseIdleConnections() })

	// Opened before the listeners: a path we cannot write stops us before we serve.
	i.accessLog, err = newAccessLog(cfg.Log, i.proxies.upstream, opts.Stdout, opts.Stderr, log.Named("access-log"))
	if err != nil {
		return nil, fmt.Errorf("cannot open the access log: %w", err)
	}
	i.logs = &logSwitch{}
	i.undo = append(i.undo, trapLogSignals(i.logs))

	var upstream http.Handler = i.proxies
	if i.sup != nil {
		guard := proxy.AppGuard(i.sup, i.proxies) // 503 + Retry-After while the app is down
		// The guard's own 503s get a request id too (access log, X-Request-Id upstream).
		upstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			guard.ServeHTTP(w, i.proxies.current().WithRequestID(r))
		})
	}
	i.publics = &publicListeners{upg: i.upg, d: i.d, front: i.front, h2: i.h2, handler: upstream, limits: cfg.Limits,
		server: cfg.Server, drain: cfg.Drain, log: log, byAddr: map[string]*listener.Listener{}, served: map[string]net.Listener{}}
	if i.upg.Upgraded() {
		i.publics.hold()
	}
	i.reloader = &reloader{
		args: opts.Args, getenv: opts.Getenv, stdout: opts.Stdout, stderr: opts.Stderr, log: log, started: i.started, running: cfg,
		proxies: i.proxies, logs: i.logs, checker: i.checker, checkOpts: &i.checkOpts, front: i.front, sup: i.sup,
		d: i.d, notify: i.notify, stats: i.reloads, publics: i.publics, overload: i.overload,
	}
	return i, nil
}

// newApp builds the supervised app (-- COMMAND): drainproxy runs it, is ready once it
// answers, and stops it only after the proxy has drained.
func (i *Instance) newApp() error {
	cfg := i.cfg
	sup, err := supervise.NewApp(supervise.AppOptions{Options: supervise.Options{
		Command: cfg.Upstream.Command, Upstream: cfg.Upstream.URL, Stdout: i.opts.Stdout, Stderr: i.opts.Stderr,
		Env:          handover.Environ(i.opts.Environ), // not systemd's main process, nor upgraded
		OutputPrefix: cfg.App.OutputPrefix, StopSignal: cfg.App.StopSignal,
		StopTimeout: cfg.App.StopTimeout, StartTimeout: cfg.App.StartTimeout,
		WaitReady: i.checker.WaitHealthy, Check: i.checker.CheckNow,
		Restart: cfg.App.Restart, MaxRestarts: cfg.App.MaxRestarts, RestartWindow: cfg.App.RestartWindow,
		ForwardSignals: cfg.App.ForwardSignals, Logger: i.log.Named("app"),
	},
		// Zero-downtime restart (SIGHUP, POST /restart): the new instance is checked
		// as the upstream is, then the proxy and the health checker move to it.
		CheckAt: func(u *url.URL) func(context.Context) error {
			o := *i.checkOpts.Load()
			o.Upstream = u
			return health.New(o).CheckNow
		},
		Switch: func(u *url.URL) (supervise.Retired, error) {
			old, err := i.proxies.switchUpstream(u)
			if err != nil {
				return nil, err
			}
			i.checker.SetUpstream(u)
			return old, nil
		},
		Grace: cfg.Drain.Grace,
	})
	if err != nil {
		return err
	}
	i.sup = sup
	i.undo = append(i.undo, sup.Close)
	i.gate = sup.Gate
	return nil
}

// newDrainer builds the drainer, which runs the drain's sequence, and traps SIGTERM and
// SIGINT for it before anything slow.
func (i *Instance) newDrainer() {
	cfg := i.cfg
	var stopApp func(context.Context) error
	if i.sup != nil {
		stopApp = i.sup.Stop
	}
	i.d = drain.New(drain.Options{
		Delay:     cfg.Drain.Delay,
		Grace:     cfg.Drain.Grace,
		IdleClose: cfg.Drain.IdleClose,
		// readiness stays 200 this long into the drain (KEP-1669 terminating endpoints)
		ReadinessFailDelay: cfg.Drain.ReadinessFailDelay,
		FlushTimeout:       cfg.Drain.FlushTimeout,
		Logger:             i.log.Named("drain"),
		// Issue 25: drain.delay = "auto", progress lines, the termination log.
		DelayAuto: cfg.Drain.DelayAuto, Quiet: cfg.Drain.Quiet, DelayMin: cfg.Drain.DelayMin, DelayMax: cfg.Drain.DelayMax,
		ProgressInterval: progressInterval(cfg.Drain.ProgressInterval),
		TerminationLog:   terminationLog(cfg.Drain.TerminationLog),
		Gate:             i.ready,
		StopApp:          stopApp,
	})
	i.d.OnDrainStart(i.h2.Drain)
	i.d.OnStopAccepting(func(context.Context) { i.h2.StopAccepting() })
	i.d.Observe(i.checker) // requests that cannot reach the upstream count as failed checks
	if i.sup != nil {
		i.sup.AbortOn(i.d.Requested()) // a drain wins over a restart that has not switched yet
	}
	// Trap signals before anything slow, so that a SIGTERM during start-up still drains.
	i.undo = append(i.undo, i.d.TrapSignals())
}

// ready is the drainer's gate. Ready only once the upstream has answered; then a process
// this one upgrades may drain, and systemd hears READY=1. A process an upgrade started
// accepts on the sockets it shares with that one only from here on (publics.hold): until
// its own app answers, every connection goes to the process still serving.
func (i *Instance) ready(ctx context.Context) error {
	if err := i.gate(ctx); err != nil {
		return err
	}
	if err := i.publics.serveHeld(); err != nil {
		return err
	}
	close(i.releaseAdmin)
	closeAdmin := func() {}
	if i.adm != nil {
		closeAdmin = i.adm.Close
	}
	i.upg.Ready(i.d, closeAdmin)
	return nil
}

// close undoes what New set up, last first.
func (i *Instance) close() {
	for k := len(i.undo) - 1; k >= 0; k-- {
		i.undo[k]()
	}
	i.undo = nil
}

// Reload reads the configuration again (Options.Args and the file they name, the
// environment) and applies what changed to the running instance, as SIGHUP does;
// reason is logged with it.
func (i *Instance) Reload(reason string) { i.reloader.reload(reason) }

// Run opens the listeners, starts what serves and runs the drain to its end: canceling
// ctx starts the drain, as SIGTERM does. It returns the process's exit code (0 for a
// clean drain). Run is called once, and undoes what New set up before it returns.
func (i *Instance) Run(ctx context.Context) int {
	defer i.close()
	cfg, log := i.cfg, i.log
	addrs := make([]string, 0, len(cfg.Listeners))
	for _, l := range cfg.Listeners {
		addr, err := i.publics.open(ctx, l)
		if err != nil {
			// A systemd socket that matches no listener is the usual cause of an address
			// in use under socket activation: say so before failing.
			i.upg.CloseUnused()
			log.Error("cannot listen", "error", err.Error())
			return exitFailure
		}
		addrs = append(addrs, addr)
	}
	warnLoopbackInContainer(addrs, i.opts.Getenv, log)
	if err := i.front.Start(ctx); err != nil {
		log.Error("cannot manage certificates", "error", err.Error())
		return exitFailure
	}

	// The admin listener is not added to the drain: it answers until the drain is over
	// (so /readyz says 503 and /metrics can be scraped throughout) and closes after it,
	// or once an upgrade handed it to the next process.
	adminAddr := "off"
	if cfg.Admin.Address != "" {
		m := newMetrics(i.d, i.checker, i.logs, i.sup, i.reloads, i.proxies.current().ProtocolErrors(), i.overload, i.publics, i.opts.Version, log.Named("metrics"))
		i.d.Observe(m)
		adm, err := startAdmin(i.upg, i.releaseAdmin, admin.Options{
			Address: cfg.Admin.Address, Token: cfg.Admin.Token, AllowedHosts: cfg.Admin.AllowedHosts,
			Drainer: i.d, Health: i.checker, Metrics: m.Handler(), Restarter: restarter(i.sup), App: supervisedApp(i.sup),
			Upstream: i.proxies.current().Upstream(), CurrentUpstream: i.proxies.upstream, ConfigSource: cfg.Source, Version: i.opts.Version,
			Logger: log.Named("admin"),
		})
		if err != nil {
			log.Error("cannot start the admin listener", "error", err.Error())
			return exitFailure
		}
		defer adm.Close()
		i.adm, i.reloader.adm = adm, adm
		adminAddr = adm.Addr()
	}
	i.upg.CloseUnused()
	i.d.Workers.Go("health", i.checker.Run)
	i.d.Observe(i.logs)
	i.logs.swap(i.accessLog, i.d.Workers)
	i.d.Workers.Go("watchdog", i.notify.RunWatchdog)

	// SIGHUP reloads the configuration (reload.go), SIGUSR2 upgrades (package handover).
	stopReload := i.reloader.trapReload()
	defer stopReload()
	if slices.Contains(cfg.App.ForwardSignals, syscall.SIGUSR2) {
		log.Info("SIGUSR2 goes to the app (app.forward_signals), so it does not upgrade drainproxy")
	} else {
		stopUpgrade := i.upg.TrapUpgrade()
		defer stopUpgrade()
	}
	go func() { // ends with the drain, which Run always reaches
		<-i.d.Requested()
		i.notify.Stopping("draining")
	}()

	log.Info("drainproxy starting", "version", i.opts.Version, "listen", strings.Join(addrs, ","),
		"admin", adminAddr, "upstream", i.proxies.current().Upstream(), "access_log", cfg.Log.AccessLog, "server_engine", cfg.Server.Engine,
		"config", cfg.Source, "pid", os.Getpid())
	if i.sup == nil {
		return i.d.Run(ctx).ExitCode()
	}
	if err := i.sup.Start(i.d.Drain); err != nil {
		log.Error("cannot start the app", "error", err.Error())
		return exitFailure
	}
	return i.sup.ExitCode(i.d.Run(ctx).ExitCode())
}

// exitFailure is the exit code of an instance that could not start serving.
const exitFailure = 1

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
