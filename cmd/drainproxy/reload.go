package main

// SIGHUP: reload the configuration in place. The file and the flags are read again as at
// start; what can change without closing a connection does (the proxy and its upstream,
// the access log, the log level, the admin token, certificate files, plain listeners
// added or removed), the rest is named in
// one line as needing an upgrade (SIGUSR2). A configuration that does not parse or
// validate changes nothing: the error says file:line:col, and the running one serves on;
// in supervised mode the app is not restarted either (a valid one restarts it).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/accesslog"
	"github.com/drainproxy/drainproxy/admin"
	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/supervise"
	"github.com/drainproxy/drainproxy/tlsfront"
)

// certFiles is each listener's certificate and key file ("" for none), by address.
func certFiles(ls []config.Listener) map[string][2]string {
	m := map[string][2]string{}
	for _, l := range ls {
		if l.TLS != nil && l.TLS.ACME == nil {
			m[l.Address] = [2]string{l.TLS.CertFile, l.TLS.KeyFile}
		}
	}
	return m
}

// withoutCertFiles is ls with the certificate file paths blanked: what a reload cannot
// change about the listeners.
func withoutCertFiles(ls []config.Listener) []config.Listener {
	out := make([]config.Listener, len(ls))
	for i, l := range ls {
		out[i] = l
		if l.TLS != nil {
			t := *l.TLS
			t.CertFile, t.KeyFile = "", ""
			out[i].TLS = &t
		}
	}
	return out
}

// listenerChanges compares the listeners by address: those only in next are to be
// opened, those only in running to be removed; one in both whose settings differ (other
// than its certificate files) needs an upgrade, as does a new HTTPS listener (tlsfront
// sets certificates up at start). served is what serves once the reload is done.
func listenerChanges(running, next []config.Listener) (add []config.Listener, remove, needUpgrade []string, served []config.Listener) {
	was := map[string]config.Listener{}
	for _, l := range running {
		was[l.Address] = l
	}
	now := map[string]bool{}
	for _, l := range next {
		now[l.Address] = true
		old, ok := was[l.Address]
		switch {
		case !ok && l.TLS != nil:
			needUpgrade = append(needUpgrade, "listener "+l.Address+" (a new HTTPS listener)")
		case !ok:
			add = append(add, l)
			served = append(served, l)
		case !reflect.DeepEqual(withoutCertFiles([]config.Listener{old}), withoutCertFiles([]config.Listener{l})):
			needUpgrade = append(needUpgrade, "listener "+l.Address)
			served = append(served, old)
		default:
			served = append(served, l)
		}
	}
	for _, l := range running {
		if !now[l.Address] {
			remove = append(remove, l.Address)
		}
	}
	return add, remove, needUpgrade, served
}

// changes compares two configurations setting by setting (config.Settings): the settings a
// reload applies that differ from the running ones, and the names of the others that differ
// from what the process started with (a reload never applies them). Listeners are
// listenerChanges'.
func changes(supervised bool, running, started, next *config.Config) (inPlace []config.Setting, needUpgrade []string) {
	for _, s := range config.Settings {
		switch s.EffectFor(supervised) {
		case config.PerListener:
		case config.NeedsUpgrade:
			if !reflect.DeepEqual(s.Value(started), s.Value(next)) {
				needUpgrade = append(needUpgrade, s.Name)
			}
		default:
			if !reflect.DeepEqual(s.Value(running), s.Value(next)) {
				inPlace = append(inPlace, s)
			}
		}
	}
	return inPlace, needUpgrade
}

// has reports whether one of the settings has effect e.
func has(settings []config.Setting, supervised bool, e config.Effect) bool {
	return slices.ContainsFunc(settings, func(s config.Setting) bool { return s.EffectFor(supervised) == e })
}

// named reports whether one of the settings is one of names.
func named(settings []config.Setting, names ...string) bool {
	return slices.ContainsFunc(settings, func(s config.Setting) bool { return slices.Contains(names, s.Name) })
}

// live is what a reload can change in a running drainproxy, and how to build it again.
type live struct {
	args           []string // the command line as at start
	stdout, stderr io.Writer
	log            hclog.Logger // the root logger
	started        *config.Config

	proxies  *proxySwitch
	overload *proxy.Overload // the cap on requests in flight, kept across reloads
	logs     *logSwitch
	checker  *health.Checker
	// checkOpts are the health check settings a restarted app instance is checked with.
	checkOpts *atomic.Pointer[health.Options]
	front     *tlsfront.Front
	sup       *supervise.App
	adm       *admin.Server // nil without an admin listener
	d         *drain.Drainer
	notify    *notifier
	stats     *reloadStats
	publics   *publicListeners

	mu      sync.Mutex // one reload at a time
	running *config.Config
}

// reloadStats counts configuration reloads for the metrics (metrics.ConfigReloadCounter).
type reloadStats struct {
	ok, failed atomic.Uint64
	lastFailed atomic.Bool
	loaded     atomic.Int64 // unix nanoseconds: when the configuration in service was loaded
}

func newReloadStats() *reloadStats {
	s := &reloadStats{}
	s.loaded.Store(time.Now().UnixNano())
	return s
}

func (s *reloadStats) record(ok bool) {
	if ok {
		s.ok.Add(1)
		s.loaded.Store(time.Now().UnixNano())
	} else {
		s.failed.Add(1)
	}
	s.lastFailed.Store(!ok)
}

// ConfigReloads implements metrics.ConfigReloadCounter.
func (s *reloadStats) ConfigReloads() (ok, failed uint64) { return s.ok.Load(), s.failed.Load() }

// LastConfigReload implements metrics.ConfigReloadCounter.
func (s *reloadStats) LastConfigReload() (bool, time.Time) {
	return !s.lastFailed.Load(), time.Unix(0, s.loaded.Load())
}

// trapReload makes SIGHUP reload; stop undoes it and waits for a reload in progress.
func (l *live) trapReload() (stop func()) {
	return sigtrap.Handle(func(os.Signal) { l.reload("signal SIGHUP") }, syscall.SIGHUP)
}

// reload reads the configuration again and applies what changed; see the file comment.
func (l *live) reload(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	log := l.log.Named("reload")
	select {
	case <-l.d.Requested():
		log.Info("not reloading: the drain has begun", "reason", reason)
		return
	default:
	}
	l.notify.reloading()
	const reloaded = "serving; configuration reloaded"
	status := "serving; the last reload failed, see the log"
	defer func() {
		l.stats.record(status == reloaded)
		l.notify.ready(status)
	}()
	// A refused configuration changes nothing, the supervised app included: restarting it
	// would apply half of a change the operator meant as a whole (a new app with the old
	// proxy settings) and bury the error; POST /restart restarts the app alone.
	refused := []any{"reason", reason}
	if l.sup != nil {
		refused = append(refused, "app", "not restarted")
	}
	next, err := config.Parse(l.args, io.Discard)
	if err != nil {
		log.Error("the new configuration is invalid: still serving the running one (drainproxy -check shows the same)",
			append(refused, "error", err.Error())...)
		return
	}
	supervised := l.sup != nil
	inPlace, needUpgrade := changes(supervised, l.running, l.started, next)
	addListeners, removeListeners, listenersNeedUpgrade, served := listenerChanges(l.running.Listeners, next.Listeners)
	needUpgrade = append(needUpgrade, listenersNeedUpgrade...)

	// Build first what can fail, so that a failure changes nothing.
	var newProxy *proxy.Proxy
	if has(inPlace, supervised, config.RebuildsProxy) {
		target := next.Upstream.URL
		if l.sup != nil {
			target, _ = url.Parse(l.proxies.current().Upstream()) // the app instance serving now
		}
		// The counts of stray responses carry over to the new proxy.
		if newProxy, err = buildProxy(next, target, l.overload, l.proxies.current().ProtocolErrors(), l.log); err != nil {
			log.Error("cannot build the proxy from the new configuration: still serving the running one", append(refused, "error", err.Error())...)
			return
		}
	}
	var newLog *accesslog.Log
	// Each line's upstream is read from the proxy in service when it is written, so a new
	// upstream needs no new log.
	accessLogChanged := has(inPlace, supervised, config.ReopensAccessLog)
	if accessLogChanged {
		if newLog, err = newAccessLog(next.Log, l.proxies.upstream, l.stdout, l.stderr, l.log.Named("access-log")); err != nil {
			if newProxy != nil {
				newProxy.CloseIdleConnections()
			}
			log.Error("cannot open the new access log: still serving the running configuration", append(refused, "error", err.Error())...)
			return
		}
	}

	// New listeners last of what can fail: a port in use changes nothing.
	var opened []string
	for i, nl := range addListeners {
		bound, err := l.publics.open(context.Background(), nl)
		if err != nil {
			for _, a := range addListeners[:i] {
				l.publics.remove(a.Address) // new, so next to nothing to drain
			}
			if newProxy != nil {
				newProxy.CloseIdleConnections()
			}
			if newLog != nil { // Run with its context over closes it
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				newLog.Run(ctx)
			}
			log.Error("cannot open a new listener: still serving the running configuration", append(refused, "error", err.Error())...)
			return
		}
		opened = append(opened, nl.Address)
		if bound != nl.Address {
			opened[len(opened)-1] += " (" + bound + ")"
		}
	}

	// Then switch, each in one step that no request sees half done.
	if newProxy != nil {
		builtFor := ""
		if l.sup != nil {
			builtFor = newProxy.Upstream()
		}
		l.proxies.swap(newProxy, builtFor)
		if named(inPlace, "upstream.url") {
			l.checker.SetUpstream(next.Upstream.URL)
		}
	}
	if accessLogChanged {
		l.logs.swap(newLog, l.d.Workers)
	}
	if has(inPlace, supervised, config.ResetsHealthCheck) {
		target, _ := url.Parse(l.proxies.current().Upstream())
		opts := healthOptions(next, target, l.log)
		l.checker.SetOptions(target, opts)
		l.checkOpts.Store(&opts)
	}
	if named(inPlace, "log.level") {
		l.log.SetLevel(hclog.LevelFromString(next.Log.Level))
	}
	if named(inPlace, "admin.token", "admin.token_file") && l.adm != nil {
		l.adm.SetToken(next.Admin.Token)
	}
	if named(inPlace, "listener.tls.cert_file", "listener.tls.key_file") {
		running, served := certFiles(l.running.Listeners), certFiles(l.started.Listeners)
		for addr, files := range certFiles(next.Listeners) {
			if _, ok := served[addr]; ok && running[addr] != files { // a new listener needs an upgrade
				if err := l.front.SetCertFiles(addr, files[0], files[1]); err != nil {
					log.Error("cannot use the new certificate files; still serving the previous ones", "error", err.Error())
				}
			}
		}
	}
	l.front.ReloadStatic() // certificate files are read again whether or not their paths changed; logs its outcome
	// Removed listeners drain as at shutdown, each on its own: the reload does not wait.
	for _, addr := range removeListeners {
		l.d.Workers.Go("remove listener "+addr, func(context.Context) {
			start := time.Now()
			if err := l.publics.remove(addr); err != nil {
				log.Warn("removing the listener", "address", addr, "error", err.Error())
			}
			log.Info("listener removed", "address", addr, "took", time.Since(start).String())
		})
	}
	l.running = next
	l.running.Listeners = served
	status = reloaded

	var applied []string
	for _, s := range inPlace {
		applied = append(applied, s.Name)
	}
	if len(opened) > 0 {
		applied = append(applied, "listener added: "+strings.Join(opened, ", "))
	}
	if len(removeListeners) > 0 {
		applied = append(applied, "listener removed: "+strings.Join(removeListeners, ", "))
	}
	changed := "nothing"
	if len(applied) > 0 {
		changed = strings.Join(applied, ", ")
	}
	log.Info("configuration reloaded", "reason", reason, "source", next.Source, "changed", changed,
		"upstream", l.proxies.current().Upstream())
	if len(needUpgrade) > 0 {
		log.Warn("these settings changed but a reload cannot apply them: they need an upgrade (SIGUSR2) or a restart",
			"settings", strings.Join(needUpgrade, ", "))
	}
	if l.sup != nil {
		if err := l.sup.Restart(reason); err != nil {
			log.Warn("not restarting the app", "reason", err.Error())
		}
	}
}

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

// proxySwitch is the public handler's way to the proxy. A reload that changes how requests
// are proxied builds a new proxy.Proxy and swaps it in: requests that start from then on
// use it, requests in flight finish on the one they started on, whose idle upstream
// connections are closed once the last of them is done.
//
// A retired proxy still sends its requests in flight to the app instance it was serving,
// so an app restart (switchUpstream) waits for them too, not only for those of the
// current proxy: retired keeps every retired proxy that still has requests in flight.
type proxySwitch struct {
	cur     atomic.Pointer[proxyGen]
	mu      sync.Mutex  // orders swap with switchUpstream; guards retired
	retired []*proxyGen // swapped out, perhaps still busy
}

// proxyGen is one proxy and the count of requests on it, in one word with retiredBit once
// the proxy was replaced (the pattern of proxy.Backend), so that "count a request unless
// retired" is a single atomic add.
type proxyGen struct {
	p     *proxy.Proxy
	state atomic.Int64
	once  sync.Once
	idle  chan struct{} // closed once retired with nothing in flight
}

const retiredBit = int64(1) << 62

func newProxyGen(p *proxy.Proxy) *proxyGen { return &proxyGen{p: p, idle: make(chan struct{})} }

func newProxySwitch(p *proxy.Proxy) *proxySwitch {
	s := &proxySwitch{}
	s.cur.Store(newProxyGen(p))
	return s
}

// current is the proxy new requests go to.
func (s *proxySwitch) current() *proxy.Proxy { return s.cur.Load().p }

// upstream is the current proxy's upstream address, which follows restarts and reloads.
func (s *proxySwitch) upstream() string { return s.current().Upstream() }

func (s *proxySwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := s.acquire()
	defer g.release()
	g.p.ServeHTTP(w, r)
}

// acquire counts a request on the current proxy and returns it. A swap between the load
// and the count makes it look again; the proxy that replaced it is stored by then.
func (s *proxySwitch) acquire() *proxyGen {
	for {
		g := s.cur.Load()
		if g.state.Add(1)&retiredBit == 0 {
			return g
		}
		g.release()
	}
}

// switchUpstream moves the current proxy to u: a supervised app's zero-downtime restart.
// What it returns waits for the requests in flight to the previous upstream, through the
// current proxy and through every proxy a reload retired that still has some.
func (s *proxySwitch) switchUpstream(u *url.URL) (supervise.Retired, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.current().Switch(u)
	if err != nil {
		return nil, err
	}
	s.pruneRetired()
	return &retiredUpstream{backend: old, gens: slices.Clone(s.retired)}, nil
}

// pruneRetired forgets the retired proxies with nothing in flight. s.mu must be held.
func (s *proxySwitch) pruneRetired() {
	s.retired = slices.DeleteFunc(s.retired, (*proxyGen).isIdle)
}

// swap sends every request from now on to p. builtFor, when not empty, is the upstream
// p was built for: if a restart moved the current proxy meanwhile, p follows it.
func (s *proxySwitch) swap(p *proxy.Proxy, builtFor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.current().Upstream(); builtFor != "" && now != builtFor {
		if u, err := url.Parse(now); err == nil {
			if unused, err := p.Switch(u); err == nil {
				unused.Close() // built a moment ago, never served
			}
		}
	}
	old := s.cur.Swap(newProxyGen(p))
	if old.state.Add(retiredBit) == retiredBit {
		old.retire()
	}
	s.pruneRetired()
	if !old.isIdle() {
		s.retired = append(s.retired, old)
	}
}

func (g *proxyGen) release() {
	if g.state.Add(-1) == retiredBit {
		g.retire()
	}
}

func (g *proxyGen) retire() {
	g.once.Do(func() {
		close(g.idle)
		g.p.CloseIdleConnections()
	})
}

func (g *proxyGen) isIdle() bool {
	select {
	case <-g.idle:
		return true
	default:
		return false
	}
}

// inflight is how many requests are in flight on g.
func (g *proxyGen) inflight() int64 { return g.state.Load() &^ retiredBit }

// retiredUpstream is the app instance a restart replaced, as the proxies reach it: the
// current proxy's previous backend, and the proxies a reload retired while requests were
// still in flight on them (those go to the previous instance, or to an older one that is
// already stopped). It implements supervise.Retired.
type retiredUpstream struct {
	backend *proxy.Backend
	gens    []*proxyGen
}

// Wait waits for the requests through the current proxy, then for those on each retired
// proxy; each wakes when its last request ends.
func (r *retiredUpstream) Wait(ctx context.Context) error {
	if err := r.backend.Wait(ctx); err != nil {
		return fmt.Errorf("%w (and %d on proxies retired by a reload)", err, r.gensInflight())
	}
	for _, g := range r.gens {
		select {
		case <-g.idle:
		case <-ctx.Done():
			return fmt.Errorf("%d requests still in flight to %s on proxies retired by a reload: %w",
				r.gensInflight(), r.backend.Upstream(), ctx.Err())
		}
	}
	return nil
}

func (r *retiredUpstream) gensInflight() int64 {
	var n int64
	for _, g := range r.gens {
		n += g.inflight()
	}
	return n
}

// Inflight is how many requests are still in flight to the previous upstream.
func (r *retiredUpstream) Inflight() int64 { return r.backend.Inflight() + r.gensInflight() }

// GoAway ends the WebSockets still open to the previous upstream with close frames.
func (r *retiredUpstream) GoAway() {
	var wg sync.WaitGroup
	wg.Go(r.backend.GoAway)
	for _, g := range r.gens {
		wg.Go(g.p.GoAway)
	}
	wg.Wait()
}

// Close closes the previous backend's idle connections; a retired proxy closes its own
// when its last request ends.
func (r *retiredUpstream) Close() { r.backend.Close() }

// logSwitch is the access log as the drain observes it: the log a reload opened last, or
// none. A swap waits for the Observe calls that hold the old log, then ends the old log's
// worker, which writes what is queued and closes its file.
type logSwitch struct {
	mu   sync.RWMutex
	cur  *accesslog.Log
	stop context.CancelFunc // ends cur's worker

	// Counters of the logs swapped out, so that the totals never go down.
	dropped, writeErrors atomic.Uint64
}

// swap makes l (nil: none) the log and runs its worker in workers.
func (s *logSwitch) swap(l *accesslog.Log, workers *drain.Group) {
	var stop context.CancelFunc = func() {}
	if l != nil {
		ctx, cancel := context.WithCancel(context.Background())
		stop = cancel
		workers.Go("access-log", func(group context.Context) {
			defer context.AfterFunc(group, cancel)()
			l.Run(ctx)
		})
	}
	s.mu.Lock()
	old, oldStop := s.cur, s.stop
	s.cur, s.stop = l, stop
	s.mu.Unlock()
	if old != nil {
		oldStop()
		s.dropped.Add(old.Dropped())
		s.writeErrors.Add(old.WriteErrors())
	}
}

func (s *logSwitch) Observe(x *drain.Exchange) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur != nil {
		s.cur.Observe(x)
	}
}

// Reopen reopens the current log's file (SIGUSR1).
func (s *logSwitch) Reopen() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur != nil {
		s.cur.Reopen()
	}
}

func (s *logSwitch) Dropped() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.dropped.Load()
	if s.cur != nil {
		n += s.cur.Dropped()
	}
	return n
}

func (s *logSwitch) WriteErrors() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.writeErrors.Load()
	if s.cur != nil {
		n += s.cur.WriteErrors()
	}
	return n
}
