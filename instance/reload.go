package instance

// SIGHUP: reload the configuration in place. The file and the flags are read again as at
// start; what can change without closing a connection does (the proxy and its upstream,
// the access log, the log level, the admin token, certificate files, plain listeners
// added or removed), the rest is named in
// one line as needing an upgrade (SIGUSR2). A configuration that does not parse or
// validate changes nothing: the error says file:line:col, and the running one serves on;
// in supervised mode the app is not restarted either (a valid one restarts it).

import (
	"context"
	"io"
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
	"github.com/drainproxy/drainproxy/handover"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/internal/logdur"
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

// reloader is what a reload can change in a running drainproxy, and how to build it again.
type reloader struct {
	args           []string            // the command line as at start
	getenv         func(string) string // the environment, as at start
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
	notify    *handover.Notifier
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
func (l *reloader) trapReload() (stop func()) {
	return sigtrap.Handle(func(os.Signal) { l.reload("signal SIGHUP") }, syscall.SIGHUP)
}

// reload reads the configuration again and applies what changed; see the file comment.
func (l *reloader) reload(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	log := l.log.Named("reload")
	select {
	case <-l.d.Requested():
		log.Info("not reloading: the drain has begun", "reason", reason)
		return
	default:
	}
	l.notify.Reloading()
	const reloaded = "serving; configuration reloaded"
	status := "serving; the last reload failed, see the log"
	defer func() {
		l.stats.record(status == reloaded)
		l.notify.Ready(status)
	}()
	// A refused configuration changes nothing, the supervised app included: restarting it
	// would apply half of a change the operator meant as a whole (a new app with the old
	// proxy settings) and bury the error; POST /restart restarts the app alone.
	refused := []any{"reason", reason}
	if l.sup != nil {
		refused = append(refused, "app", "not restarted")
	}
	next, err := config.ParseEnv(l.args, l.getenv, io.Discard)
	if err != nil {
		log.Error("the new configuration is invalid: still serving the running one (drainproxy -check shows the same)",
			append(refused, "error", err.Error())...)
		return
	}
	WarnRenamed(log, next)
	plan := l.plan(next)
	// Build first what can fail, so that a failure changes nothing.
	if msg, err := l.build(plan); err != nil {
		log.Error(msg, append(refused, "error", err.Error())...)
		return
	}
	// Then switch, each in one step that no request sees half done.
	certs := l.apply(plan, log)
	status = reloaded

	log.Info("configuration reloaded", "reason", reason, "source", next.Source, "changed", plan.changed(certs),
		"upstream", l.proxies.current().Upstream())
	if len(plan.needUpgrade) > 0 {
		log.Warn("these settings changed but a reload cannot apply them: they need an upgrade (SIGUSR2) or a restart",
			"settings", strings.Join(plan.needUpgrade, ", "))
	}
	if l.sup != nil {
		if err := l.sup.Restart(reason); err != nil {
			log.Warn("not restarting the app", "reason", err.Error())
		}
	}
}

// reloadPlan is what a reload changes: the settings that differ, the listeners to open and
// remove, and the parts built for them.
type reloadPlan struct {
	next             *config.Config
	supervised       bool
	inPlace          []config.Setting
	needUpgrade      []string
	add              []config.Listener
	remove           []string
	served           []config.Listener // the listeners serving once the reload is done
	newProxy         *proxy.Proxy      // nil: the proxy stays
	accessLogChanged bool
	newLog           *accesslog.Log
	opened           []string // the listeners opened, as "address (bound)"
}

func (l *reloader) plan(next *config.Config) *reloadPlan {
	p := &reloadPlan{next: next, supervised: l.sup != nil}
	p.inPlace, p.needUpgrade = changes(p.supervised, l.running, l.started, next)
	var listenersNeedUpgrade []string
	p.add, p.remove, listenersNeedUpgrade, p.served = listenerChanges(l.running.Listeners, next.Listeners)
	p.needUpgrade = append(p.needUpgrade, listenersNeedUpgrade...)
	p.accessLogChanged = has(p.inPlace, p.supervised, config.ReopensAccessLog)
	return p
}

// build builds the new proxy and access log and opens the new listeners. On an error it
// undoes what it built and returns the line to log with the error: nothing changed.
func (l *reloader) build(p *reloadPlan) (string, error) {
	next := p.next
	if has(p.inPlace, p.supervised, config.RebuildsProxy) {
		target := next.Upstream.URL
		if p.supervised {
			target, _ = url.Parse(l.proxies.current().Upstream()) // the app instance serving now
		}
		// The counts of stray responses carry over to the new proxy.
		var err error
		if p.newProxy, err = buildProxy(next, target, l.overload, l.proxies.current().ProtocolErrors(), l.log); err != nil {
			return "cannot build the proxy from the new configuration: still serving the running one", err
		}
	}
	// Each line's upstream is read from the proxy in service when it is written, so a new
	// upstream needs no new log.
	if p.accessLogChanged {
		var err error
		if p.newLog, err = newAccessLog(next.Log, l.proxies.upstream, l.stdout, l.stderr, l.log.Named("access-log")); err != nil {
			p.discard()
			return "cannot open the new access log: still serving the running configuration", err
		}
	}
	// New listeners last of what can fail: a port in use changes nothing.
	for i, nl := range p.add {
		bound, err := l.publics.open(context.Background(), nl)
		if err != nil {
			for _, a := range p.add[:i] {
				l.publics.remove(a.Address) // new, so next to nothing to drain
			}
			p.discard()
			return "cannot open a new listener: still serving the running configuration", err
		}
		opened := nl.Address
		if bound != nl.Address {
			opened += " (" + bound + ")"
		}
		p.opened = append(p.opened, opened)
	}
	return "", nil
}

// discard closes what build built, for a reload that fails.
func (p *reloadPlan) discard() {
	if p.newProxy != nil {
		p.newProxy.CloseIdleConnections()
	}
	if p.newLog != nil { // Run with its context over closes it
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.newLog.Run(ctx)
	}
}

// apply puts what build built in service and applies the settings that need no part built;
// it returns the listeners whose certificate files were read anew.
func (l *reloader) apply(p *reloadPlan, log hclog.Logger) (certs []string) {
	next := p.next
	if p.newProxy != nil {
		builtFor := ""
		if p.supervised {
			builtFor = p.newProxy.Upstream()
		}
		l.proxies.swap(p.newProxy, builtFor)
		if named(p.inPlace, "upstream.url") {
			l.checker.SetUpstream(next.Upstream.URL)
		}
	}
	if p.accessLogChanged {
		l.logs.swap(p.newLog, l.d.Workers)
	}
	if has(p.inPlace, p.supervised, config.ResetsHealthCheck) {
		target, _ := url.Parse(l.proxies.current().Upstream())
		opts := healthOptions(next, target, l.log)
		l.checker.SetOptions(target, opts)
		l.checkOpts.Store(&opts)
	}
	if named(p.inPlace, "log.level") {
		l.log.SetLevel(hclog.LevelFromString(next.Log.Level))
	}
	if named(p.inPlace, "admin.token", "admin.token_file") && l.adm != nil {
		l.adm.SetToken(next.Admin.Token)
	}
	if named(p.inPlace, "listener.tls.cert_file", "listener.tls.key_file") {
		l.moveCertFiles(next, log)
	}
	// Certificate files are read again whether or not their paths changed; logs its outcome.
	certs, _ = l.front.ReloadStaticChanged()
	// Removed listeners drain as at shutdown, each on its own: the reload does not wait.
	for _, addr := range p.remove {
		l.d.Workers.Go("remove listener "+addr, func(context.Context) {
			start := time.Now()
			if err := l.publics.remove(addr); err != nil {
				log.Warn("removing the listener", "address", addr, "error", err.Error())
			}
			log.Info("listener removed", "address", addr, "took", logdur.Since(start))
		})
	}
	l.running = next
	l.running.Listeners = p.served
	return certs
}

// moveCertFiles serves the certificate files next names for the HTTPS listeners this
// process started with (a new HTTPS listener needs an upgrade).
func (l *reloader) moveCertFiles(next *config.Config, log hclog.Logger) {
	running, served := certFiles(l.running.Listeners), certFiles(l.started.Listeners)
	for addr, files := range certFiles(next.Listeners) {
		if _, ok := served[addr]; ok && running[addr] != files {
			if err := l.front.SetCertFiles(addr, files[0], files[1]); err != nil {
				log.Error("cannot use the new certificate files; still serving the previous ones", "error", err.Error())
			}
		}
	}
}

// changed is the reload line's list of what the reload applied ("nothing" when nothing).
func (p *reloadPlan) changed(certs []string) string {
	var applied []string
	for _, s := range p.inPlace {
		applied = append(applied, s.Name)
	}
	if len(certs) > 0 {
		applied = append(applied, "certificate: "+strings.Join(certs, ", "))
	}
	if len(p.opened) > 0 {
		applied = append(applied, "listener added: "+strings.Join(p.opened, ", "))
	}
	if len(p.remove) > 0 {
		applied = append(applied, "listener removed: "+strings.Join(p.remove, ", "))
	}
	if len(applied) == 0 {
		return "nothing"
	}
	return strings.Join(applied, ", ")
}
