package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/logdur"
)

// App is the supervised app across zero-downtime restarts. One Supervisor (one instance of
// the app) serves at a time; Restart starts a second one on a fresh port, waits until it
// answers, switches new requests to it, lets the requests in flight to the old one finish,
// and only then stops the old one. Both share one Reaper.
//
// App has the Supervisor's surface (Start, Gate, Answering, RetryAfter, Stop, ExitCode, Close), so that
// drainproxy wires it in the same places; they follow whichever instance is current.
type App struct {
	opts   AppOptions
	log    hclog.Logger
	reaper *Reaper
	onExit func(reason string)

	// cur is the instance requests go to. It changes only under mu, so that an instance
	// that ends exactly as it is switched to is never lost (see watchExit).
	cur atomic.Pointer[Supervisor]

	mu         sync.Mutex
	started    bool
	answered   bool // the first instance has answered (Gate passed)
	restarting bool
	stopping   bool

	stop      chan struct{}   // closed by Stop: end a restart in progress
	abort     <-chan struct{} // AbortOn's; nil: never
	restartWG sync.WaitGroup

	retiredRestarts  atomic.Uint64 // policy restarts of instances no longer current
	rollingOK        atomic.Uint64
	rollingFailed    atomic.Uint64
	stopOnce, closed sync.Once
	stopErr          error
}

// AppOptions configures NewApp.
type AppOptions struct {
	// Options is the app, as for New. Restart needs an Upstream with a host and port
	// (http or https): each new instance gets a fresh port on that host, through PORT and
	// {port}. Options.Check, when set, must follow the current instance (the proxy's
	// health checker, which Switch moves along); Options.WaitReady serves the first start.
	Options
	// Switch sends the requests that start from now on to u, and returns the upstream that
	// served until now, to wait for and close. Restart calls it once the new instance
	// answers, and moves the health checking along with it. Nil: Restart is refused.
	Switch func(u *url.URL) (Retired, error)
	// CheckAt returns a check that an instance answers at u (nil: connect to u). Restart
	// runs it every 100ms until it passes, for at most StartTimeout.
	CheckAt func(u *url.URL) func(ctx context.Context) error
	// Grace bounds the wait for the requests in flight to the old instance before it is
	// stopped anyway (zero: 30s).
	Grace time.Duration
}

// Retired is the upstream a Switch replaced (proxy.Backend). One that also has GoAway()
// has it called when the grace period ends with requests still in flight, before the old
// instance is stopped: it ends WebSockets with a close frame to each side.
type Retired interface {
	// Wait returns once no request is in flight to it, or with an error when ctx ends.
	Wait(ctx context.Context) error
	// Close closes its idle connections.
	Close()
	// Inflight is how many requests (streams and upgraded connections included) are
	// still in flight to it.
	Inflight() int64
}

// ErrRestartInProgress is Restart's answer while a restart runs: one at a time.
var ErrRestartInProgress = errors.New("an app restart is already in progress")

// NewApp validates opts and prepares the first instance; nothing is started yet.
func NewApp(opts AppOptions) (*App, error) {
	first, err := New(opts.Options)
	if err != nil {
		return nil, err
	}
	opts.Options = first.opts // with New's defaults
	setDefault(&opts.Grace, 30*time.Second)
	a := &App{opts: opts, log: opts.Logger, reaper: opts.Reaper, stop: make(chan struct{})}
	a.cur.Store(first)
	return a, nil
}

// Start starts the first instance (see Supervisor.Start). onExit is called when the
// current instance's supervision ends on its own; never for an instance that a restart
// replaced or abandoned.
func (a *App) Start(onExit func(reason string)) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("supervise: Start called twice")
	}
	a.started = true
	a.onExit = onExit
	a.mu.Unlock()
	if a.reaper == nil {
		r, err := NewReaper(ReaperOptions{Orphans: true, Logger: a.log.Named("reaper")})
		if err != nil {
			return err
		}
		a.reaper = r
	}
	first := a.cur.Load()
	first.opts.Reaper = a.reaper
	return first.Start(a.watchExit(first, nil))
}

// watchExit is the onExit of instance s. While s is current its end is the app's end;
// otherwise it is reported on pending (buffered, may be nil). mu is held across both the
// test and the send, and the switch tests pending under mu before it makes an instance
// current: an instance that ends around the switch is seen by exactly one side.
func (a *App) watchExit(s *Supervisor, pending chan<- string) func(reason string) {
	return func(reason string) {
		a.mu.Lock()
		current := a.cur.Load() == s
		if !current && pending != nil {
			pending <- reason // capacity 1, and a Supervisor ends once
		}
		a.mu.Unlock()
		if current && a.onExit != nil {
			a.onExit(reason)
		}
	}
}

// AbortOn makes a restart that has not switched yet end when ch is closed: the new
// instance is stopped and the old one keeps serving. drainproxy passes the drain's
// Requested, so that a drain wins over a restart; a restart that has switched still lets
// the old instance's requests finish. Call it before Start.
func (a *App) AbortOn(ch <-chan struct{}) { a.abort = ch }

// Gate waits until the first instance answers (Supervisor.Gate).
func (a *App) Gate(ctx context.Context) error {
	if err := a.cur.Load().Gate(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	a.answered = true
	a.mu.Unlock()
	return nil
}

// Answering is Supervisor.Answering for whichever instance is current.
func (a *App) Answering() bool { return a.cur.Load().Answering() }

// RetryAfter is Supervisor.RetryAfter for whichever instance is current.
func (a *App) RetryAfter() int { return a.cur.Load().RetryAfter() }

// Restart starts a zero-downtime restart in the background and returns at once; the
// steps are logged. It refuses (with the reason) while another restart runs
// (ErrRestartInProgress), before the app first answered, once a drain or Stop has begun,
// and when the options cannot give a new instance a port of its own.
func (a *App) Restart(reason string) error {
	if _, err := a.restartURL(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.stopping || drain.Closed(a.abort):
		return errors.New("the app is being stopped: drainproxy is draining")
	case !a.answered:
		return errors.New("the app has not answered yet")
	case a.restarting:
		return ErrRestartInProgress
	}
	a.restarting = true
	a.restartWG.Add(1)
	go func() {
		defer a.restartWG.Done()
		a.restart(reason)
		a.mu.Lock()
		a.restarting = false
		a.mu.Unlock()
	}()
	return nil
}

// restartURL is the upstream with port 0, to be replaced by a fresh port.
func (a *App) restartURL() (*url.URL, error) {
	if a.opts.Switch == nil {
		return nil, errors.New("app restarts are not set up")
	}
	u := a.opts.Upstream
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
		return nil, fmt.Errorf("an app restart needs an http(s) upstream with a port, to give the new instance a port of its own; the upstream is %q", urlString(u))
	}
	next := *u
	next.Host = net.JoinHostPort(u.Hostname(), "0")
	return &next, nil
}

// freshPort asks the kernel for a port that is free on host now. Between closing it here
// and the new instance binding it, another process could take it: then the new instance
// fails to listen (or exits), never passes its check, and the restart fails safely.
func freshPort(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("find a free port on %s for the new instance: %w", host, err)
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// restart is one zero-downtime restart, from start to the old instance stopped.
func (a *App) restart(reason string) {
	begun := time.Now()
	old := a.cur.Load()
	oldPid := old.Pid()
	a.log.Info("app restart: starting a new instance", "reason", reason, "old_pid", oldPid)

	// Before the switch, a drain or Stop abandons the restart; after it, only Stop cuts
	// the wait for the old instance's requests (a drain waits for them itself).
	stopCtx, stopped := context.WithCancel(context.Background())
	defer stopped()
	abortCtx, aborted := context.WithCancel(stopCtx)
	defer aborted()
	go func() {
		select {
		case <-a.stop:
			stopped()
		case <-a.abort: // nil: never
			aborted()
		case <-abortCtx.Done():
		}
	}()

	inst, err := a.startInstance()
	if err != nil {
		a.restartFailed(begun, "cannot start a new instance", err, nil)
		return
	}
	next, u := inst.sup, inst.upstream
	// Wait until it answers, for at most the start timeout (in Gate).
	waitCtx, waited := context.WithCancel(abortCtx)
	exitReason := make(chan string, 1)
	go func() {
		select {
		case r := <-inst.pending:
			exitReason <- r
			waited()
		case <-waitCtx.Done():
		}
	}()
	err = next.Gate(waitCtx)
	waited()
	if err == nil {
		select {
		case r := <-exitReason: // it answered, then ended
			err = instanceEnded(inst.pid, "answered, then", r)
		default:
		}
	}
	if err != nil {
		select {
		case r := <-exitReason:
			err = instanceEnded(inst.pid, "", r)
		default:
			if abortCtx.Err() != nil {
				err = errAbandoned
			}
		}
		a.restartFailed(begun, "the new instance did not answer", err, inst)
		return
	}
	a.log.Info("app restart: new instance answers", "pid", next.Pid(), "upstream", u.String(), "took", since(begun))

	// Switch: from here on the new instance is the app.
	retired, err := a.switchTo(inst, abortCtx)
	if err != nil {
		a.restartFailed(begun, "cannot switch to the new instance", err, inst)
		return
	}
	switched := time.Now()
	a.log.Info("app restart: switched", "pid", next.Pid(), "upstream", u.String(), "old_pid", oldPid, "took", since(begun))

	// Let the old instance's requests finish, for at most the grace period.
	waitedFor := retired.Inflight()
	graceCtx, graceDone := context.WithTimeout(stopCtx, a.opts.Grace)
	err = retired.Wait(graceCtx)
	graceDone()
	if err != nil {
		if g, ok := retired.(interface{ GoAway() }); ok {
			g.GoAway() // WebSocket close frames (1001) before the instance goes
		}
		a.log.Warn("app restart: old instance still busy; stopping it anyway", "pid", oldPid, "grace", a.opts.Grace.String(),
			"waited_for", waitedFor, "still_inflight", retired.Inflight(), "took", since(switched), "error", err.Error())
	} else {
		a.log.Info("app restart: old instance drained", "pid", oldPid, "waited_for", waitedFor, "took", since(switched))
	}
	a.retire(old)
	retired.Close()
	a.rollingOK.Add(1)
	a.log.Info("app restart: old instance stopped", "pid", oldPid, "new_pid", next.Pid(), "took", since(begun))
}

// instance is the new instance of a restart.
type instance struct {
	sup      *Supervisor
	upstream *url.URL
	pid      int          // its first process, for messages once it has ended
	pending  chan string  // its end while it is not current (watchExit)
	adopted  *atomic.Bool // set at the switch: its Check follows the proxy's checker
}

// errAbandoned is why a restart stopped that a drain overtook.
var errAbandoned = errors.New("abandoned: drainproxy is draining (the drain began before the switch)")

// instanceEnded says in plain words that the new instance (first started as pid) ended,
// given its supervisor's reason ("app exited with exit code 3") and what it did before.
func instanceEnded(pid int, before, reason string) error {
	what := strings.TrimPrefix(reason, "app ")
	if before != "" {
		what = before + " " + what
	}
	return fmt.Errorf("the new instance (pid %d) %s", pid, what)
}

// startInstance starts a Supervisor for the app on a fresh port.
func (a *App) startInstance() (*instance, error) {
	u, err := a.restartURL()
	if err != nil {
		return nil, err
	}
	port, err := freshPort(u.Hostname())
	if err != nil {
		return nil, err
	}
	u.Host = net.JoinHostPort(u.Hostname(), port)
	opts := a.opts.Options
	opts.Upstream = u
	opts.Reaper = a.reaper
	opts.WaitReady = nil // Gate polls Check
	own := a.checkAt(u)
	current, adopted := opts.Check, &atomic.Bool{}
	opts.Check = func(ctx context.Context) error {
		if adopted.Load() && current != nil {
			return current(ctx) // the proxy's checker, which follows the switch
		}
		return own(ctx)
	}
	next, err := New(opts)
	if err != nil {
		return nil, err
	}
	inst := &instance{sup: next, upstream: u, pending: make(chan string, 1), adopted: adopted}
	if err := next.Start(a.watchExit(next, inst.pending)); err != nil {
		next.Close()
		return nil, err
	}
	inst.pid = next.Pid()
	a.log.Info("app restart: new instance started", "pid", next.Pid(), "upstream", u.String())
	return inst, nil
}

// checkAt is CheckAt(u), or a connect to u.
func (a *App) checkAt(u *url.URL) func(ctx context.Context) error {
	if a.opts.CheckAt != nil {
		return a.opts.CheckAt(u)
	}
	return func(ctx context.Context) error {
		network, addr := upstreamAddress(u)
		dialer := net.Dialer{Timeout: time.Second}
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// switchTo makes next current and moves the proxy to u, unless next has ended or the
// restart was abandoned meanwhile.
func (a *App) switchTo(inst *instance, abortCtx context.Context) (Retired, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case r := <-inst.pending:
		return nil, instanceEnded(inst.pid, "answered, then", r)
	default:
	}
	if abortCtx.Err() != nil {
		return nil, errAbandoned
	}
	if !inst.sup.Running() {
		return nil, fmt.Errorf("the new instance (pid %d) answered, then stopped running (it is being restarted by policy)", inst.pid)
	}
	retired, err := a.opts.Switch(inst.upstream)
	if err != nil {
		return nil, err
	}
	inst.adopted.Store(true)
	a.cur.Store(inst.sup)
	return retired, nil
}

// retire stops an instance that is no longer current and releases it.
func (a *App) retire(s *Supervisor) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StopTimeout+killWait)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		a.log.Warn("app restart: old instance did not stop cleanly", "pid", s.Pid(), "error", err.Error())
	}
	s.Close()
	a.retiredRestarts.Add(s.Restarts())
}

// restartFailed logs why a restart failed, stops the new instance (when there is one)
// and counts the failure; the old instance keeps serving.
func (a *App) restartFailed(begun time.Time, what string, err error, inst *instance) {
	pairs := []any{"step", what, "error", err.Error(), "old_pid", a.cur.Load().Pid(), "took", since(begun)}
	if inst != nil {
		pairs = append(pairs, "new_pid", inst.pid)
	}
	a.log.Error("app restart failed; the old instance keeps serving", pairs...)
	if inst == nil {
		a.rollingFailed.Add(1)
		return
	}
	running := inst.sup.Running()
	a.retire(inst.sup)
	if running {
		a.log.Info("app restart: new instance stopped", "pid", inst.pid)
	} else {
		a.log.Info("app restart: new instance is gone", "pid", inst.pid)
	}
	a.rollingFailed.Add(1)
}

func since(t time.Time) string { return logdur.Since(t) }

// Stop ends a restart in progress (stopping whichever instance it no longer needs), then
// stops the current instance (Supervisor.Stop). drain.Options.StopApp.
func (a *App) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() {
		a.mu.Lock()
		a.stopping = true
		a.mu.Unlock()
		close(a.stop)
		a.restartWG.Wait()
		a.stopErr = a.cur.Load().Stop(ctx)
	})
	return a.stopErr
}

// ExitCode is the current instance's Supervisor.ExitCode.
func (a *App) ExitCode(drainCode int) int { return a.cur.Load().ExitCode(drainCode) }

// Close stops everything (if Stop has not), then closes the Reaper that Start made.
func (a *App) Close() {
	a.closed.Do(func() {
		a.mu.Lock()
		started := a.started
		a.mu.Unlock()
		if started {
			cur := a.cur.Load()
			ctx, cancel := context.WithTimeout(context.Background(), cur.opts.StopTimeout+killWait)
			a.Stop(ctx)
			cancel()
		}
		a.cur.Load().Close()
		if a.reaper != nil && a.opts.Reaper == nil {
			a.reaper.Close()
		}
	})
}

// Restarts is how many times the app was restarted by its restart policy, over every
// instance (metrics.RestartCounter).
func (a *App) Restarts() uint64 { return a.retiredRestarts.Load() + a.cur.Load().Restarts() }

// RollingRestarts is how many zero-downtime restarts succeeded and failed
// (metrics.RollingRestartCounter).
func (a *App) RollingRestarts() (ok, failed uint64) {
	return a.rollingOK.Load(), a.rollingFailed.Load()
}

// Pid is the current instance's process id, or 0.
func (a *App) Pid() int { return a.cur.Load().Pid() }

// NotServing is the current instance's Supervisor.NotServing: why requests cannot reach
// the app now, or "".
func (a *App) NotServing() string { return a.cur.Load().NotServing() }

// Running reports whether the current instance's process is running.
func (a *App) Running() bool { return a.cur.Load().Running() }

// OrphansReaped is how many orphaned processes the shared Reaper has reaped.
func (a *App) OrphansReaped() uint64 { return a.cur.Load().OrphansReaped() }
