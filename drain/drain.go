// Package drain is drainproxy's lifecycle: it serves, waits for a signal, and then takes
// traffic away without failing a request it has accepted. Run is the whole sequence, top to
// bottom; every step is logged with its duration:
//
//  1. ready: listeners serve, the upstream gate (if any) passed; readiness is true.
//  2. signal: SIGTERM/SIGINT or Drain(); readiness turns false at once (or after
//     Options.ReadinessFailDelay).
//  3. delay: keep accepting and serving so load balancers notice; every response asks the
//     client to close its connection.
//  4. stop accepting: new connections are kept out (their SYNs get no answer), handshakes
//     under way may finish (package listener), connections already in the kernel's accept
//     queue are accepted and served, then the listeners stop for every descriptor of their
//     sockets: from then on a new connect is refused at once. Connections the kernel had
//     accepted that could not be served are counted (Summary.Unserved). A socket handed
//     over (an upgrade's next process, systemd) is only closed here: it keeps listening.
//  5. wait: for every request and upgraded connection; the wait ends the moment the count
//     reaches zero. Idle keep-alive connections close after a short idle window (counted
//     from the drain request, stretched by each connection's round trip).
//  6. deadline: whatever is still open when the grace period ends (or at a second signal)
//     is closed and counted as aborted.
//  7. stop the app (supervised mode).
//  8. flush: background workers finish; then the caller exits with Summary.ExitCode.
//  9. hold (DrainAndHold only): Run returns only at a trapped signal or when its context
//     ends, so that a native sidecar exits when kubelet tells it to, not before.
//
// Why not just http.Server.Shutdown: it closes idle keep-alive connections at once, which
// resets a request a client is sending on one at that moment, and it polls for idle
// connections (up to 500 ms a tick), so the process lingers after the last response.
package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/internal/logdur"
	"github.com/drainproxy/drainproxy/sigtrap"
)

// Options configures a Drainer. The zero value of every field is usable.
type Options struct {
	// Delay keeps serving after the drain request so that load balancers can see the
	// failing readiness and deregister us before listeners close (zero: none). About 5s
	// suits Kubernetes: endpoint removal reaches kube-proxy and ingress controllers in a
	// few seconds.
	Delay time.Duration
	// Grace bounds the wait for in-flight requests after listeners close (zero: 30s).
	Grace time.Duration
	// ReadinessFailDelay keeps readiness true for this long after the drain begins, while
	// responses already ask their clients to close (zero: readiness turns false at once).
	// It is for load balancers that keep using a terminating backend only while it is
	// ready, such as kube-proxy's fallback to terminating-but-serving endpoints (KEP-1669)
	// for a node's last endpoint under externalTrafficPolicy: Local. It only ever shortens
	// the delay's not-ready part: the caller keeps it no longer than Delay.
	ReadinessFailDelay time.Duration
	// IdleClose is how long a keep-alive connection must stay idle during a drain before
	// it is closed (zero: 1s). The window starts when the connection's last response
	// was written, when the client acknowledged it (less a round trip), or at the drain
	// request, whichever is latest, and is stretched by a margin of the connection's
	// round trip and retransmission timeout (TCP_INFO; 3 s for a retransmitted
	// handshake), so that a request its client sends within IdleClose of reading our
	// last response is here before we would close.
	IdleClose time.Duration
	// FlushTimeout bounds the wait for background workers at exit (zero: 5s).
	FlushTimeout time.Duration
	// Logger receives the phase lines and the summary (zero: discard).
	Logger hclog.Logger

	// Gate, when set, runs once the listeners serve and must return nil before readiness
	// turns true: the upstream health check. Its context ends when a drain is requested
	// first; the drain then skips its delay, since no load balancer has seen us ready.
	Gate func(ctx context.Context) error
	// StopApp, when set, is step 7: stop the supervised app. Its context carries the
	// deadline the caller chose (none here).
	StopApp func(ctx context.Context) error

	// DelayAuto ends the delay once no new connection has arrived for Quiet (zero: 1s),
	// never before DelayMin nor after DelayMax (zero: 10s); Delay is then unused
	// (autodelay.go).
	DelayAuto          bool
	Quiet              time.Duration
	DelayMin, DelayMax time.Duration
	// ProgressInterval is how often the wait step logs what is left (zero: 5s;
	// negative: never; progress.go).
	ProgressInterval time.Duration
	// TerminationLog, when set, is a file the summary line is written to at the end
	// (Kubernetes shows /dev/termination-log in kubectl describe pod; summaryfile.go).
	TerminationLog string
}

// Summary is the outcome of Run.
type Summary struct {
	Drained int64 // requests completed after the drain began
	Aborted int64 // requests and upgraded connections closed by the deadline
	Took    time.Duration
	Forced  bool     // a second signal or Force cut the wait short
	Workers []string // background workers that did not finish in time
	Err     error    // a runtime failure that ended serving

	// UpstreamFailed counts the requests, after the drain began, that drainproxy answered
	// itself with 502, 503 or 504 because the app did not (see AnsweredForTheApp). They do
	// not change ExitCode: that says whether the drain kept its word, not the app.
	UpstreamFailed int64

	// What the deadline cut (account.go): requests with no response head sent yet,
	// requests cut mid-response, and upgraded connections (WebSockets) closed. Their sum
	// is Aborted (give or take a request that finished as the deadline struck).
	CutBeforeHead, CutMidResponse, UpgradesClosed int64
	// Unserved counts the connections the kernel had accepted (or whose handshake it had
	// answered) that the listeners closed without serving: still queued when the grace
	// period ended, or reset as the socket stopped listening (see UnservedCounter). Their
	// clients believed they were connected, so they make the drain unclean (ExitCode 1).
	Unserved int64
}

// ExitCode is 0 for a clean drain, 1 after a runtime failure, a forced or aborted drain,
// or a drain that closed accepted connections without serving them (Unserved). Requests
// the app failed during the drain (UpstreamFailed) do not count: they are logged and
// counted, but the drain itself lost nothing it could have kept.
func (s Summary) ExitCode() int {
	if s.Err != nil || s.Forced || s.Aborted > 0 || s.Unserved > 0 || len(s.Workers) > 0 {
		return 1
	}
	return 0
}

// StopAccepter is a listener that can stop taking new connections without resetting the
// ones already in its accept queue (package listener). Other listeners are just closed.
type StopAccepter interface {
	StopAccepting(ctx context.Context) (leftInQueue int, err error)
}

// UnservedCounter is a StopAccepter that counts the connections it closed without serving
// them, and says how it kept new connections out (package listener: Unserved, StopMethod).
type UnservedCounter interface {
	Unserved() int64
	StopMethod() (method, why string)
}

// Remover is a listener that can also stop for good, every copy of its socket included
// (package listener), for Drainer.Remove. Other listeners are drained as at shutdown.
type Remover interface {
	Remove(ctx context.Context) (leftInQueue int, err error)
}

// Server is an HTTP server the drain serves on a listener and drains: net/http's
// (through HTTPServer) or package h1serve's. The drain follows its connections through
// the hooks it returns, closes idle keep-alive ones itself, and asks clients to close
// through the responses (Handler), so it needs nothing else of the server.
type Server interface {
	// Serve accepts connections on ln until Close; after Close it returns
	// http.ErrServerClosed.
	Serve(ln net.Listener) error
	// Close closes the listener and every connection being served at once, without
	// waiting for handlers (hijacked connections are not the server's any more).
	Close() error
	// Hooks returns where the server keeps its connection-state hook and its base
	// context hook, with the meaning of http.Server's ConnState and BaseContext: the
	// state hook is called with StateNew before a connection is served, then in order
	// on its goroutine; a connection turns StateIdle between requests and StateActive
	// once a request is on its way. AddServer chains both before Serve.
	Hooks() (connState *func(net.Conn, http.ConnState), baseContext *func(net.Listener) context.Context)
}

// HTTPServer adapts a net/http Server to Server.
func HTTPServer(srv *http.Server) Server { return netHTTPServer{srv} }

type netHTTPServer struct{ *http.Server }

func (s netHTTPServer) Hooks() (*func(net.Conn, http.ConnState), *func(net.Listener) context.Context) {
	return &s.ConnState, &s.BaseContext
}

type server struct {
	name string
	http Server
	ln   net.Listener

	// For Remove: the server's own connections, and whether it is being removed.
	removing atomic.Bool
	removeAt atomic.Int64  // unix nanoseconds: when Remove began, the earliest start of an idle window
	conns    sync.Map      // net.Conn -> struct{}
	open     atomic.Int64  // len(conns)
	gone     chan struct{} // capacity 1: woken when open reaches zero while removing
	// served is closed when Serve has returned: every connection its Accept handed out
	// has been reported (StateNew comes before the next Accept, in both engines).
	served chan struct{}
}

// serveExitWait bounds how long a stop waits for a server's Serve to return once its
// listener is closed: only the moments between an Accept and the StateNew it leads to.
const serveExitWait = 2 * time.Second

// waitServed waits until s's Serve has returned after its listener stopped, so that a
// connection the kernel handed out just before the stop is counted before the drain
// looks for what is still open; false if it did not within serveExitWait or ctx.
func (s *server) waitServed(ctx context.Context) bool {
	t := time.NewTimer(serveExitWait)
	defer t.Stop()
	select {
	case <-s.served:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// serverKey is the context key under which a request finds the server it came in on
// (*server), to ask its client to close when that server is being removed.
type serverKey struct{}

// connState follows the server's own connections, after the tracker's hook.
func (s *server) connState(t *tracker, c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.conns.Store(c, struct{}{})
		s.open.Add(1)
	case http.StateIdle:
		if s.removing.Load() && !t.closing.Load() { // the drain closes idle ones itself
			if v, ok := t.conn.Load(c); ok {
				t.closeWhenIdleLongEnough(c, v.(*connInfo), s.removeAt.Load())
			}
		}
	case http.StateHijacked, http.StateClosed:
		if _, ok := s.conns.LoadAndDelete(c); ok && s.open.Add(-1) == 0 && s.removing.Load() {
			select {
			case s.gone <- struct{}{}:
			default:
			}
		}
	}
}

// Drainer runs one process's serve-and-drain sequence. Build it with New, add servers
// and observers, then call Run once.
type Drainer struct {
	opts Options
	log  hclog.Logger
	t    *tracker

	// Workers are the background workers Run waits for at its flush step.
	Workers *Group

	phase     atomic.Int32
	requested chan struct{} // closed by the first Drain
	forced    chan struct{} // closed by the first Force
	waited    chan struct{} // closed when the wait for in-flight requests is over
	reqOnce   sync.Once
	forceOnce sync.Once
	reason    atomic.Value // string: why the drain began

	readyUntil atomic.Int64  // unix nanoseconds: readiness stays true until then (ReadinessFailDelay)
	hold       atomic.Bool   // DrainAndHold: after the drain, wait for a signal before Run returns
	signaled   chan struct{} // closed by the first trapped SIGTERM/SIGINT
	signalOnce sync.Once

	failOnce sync.Once
	failure  error

	drained  atomic.Int64 // requests finished after the drain began
	aborted  atomic.Int64 // requests still open at the deadline
	aborting atomic.Bool  // the deadline passed: what finishes now was cut off

	upstreamFailed atomic.Int64                 // requests after the drain began that drainproxy answered for the app
	cuts           cuts                         // what the deadline cut, by kind (account.go)
	clock          atomic.Pointer[DrainClock]   // progress.go
	last           atomic.Pointer[lastFinished] // progress.go
	unserved       atomic.Int64                 // connections the listeners closed without serving (Summary.Unserved)

	mu        sync.Mutex // servers, running
	servers   []*server
	running   bool // Run has started serving: AddServer's servers start at once
	serving   sync.WaitGroup
	observers []Observer
	onStop    []func(context.Context)
	onDrain   []func()
}

// New returns a Drainer in PhaseStarting.
func New(opts Options) *Drainer {
	if opts.Grace <= 0 {
		opts.Grace = 30 * time.Second
	}
	if opts.IdleClose <= 0 {
		opts.IdleClose = time.Second
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Drainer{
		opts:      opts,
		log:       opts.Logger,
		t:         newTracker(opts.IdleClose),
		Workers:   NewGroup(opts.Logger.Named("worker")),
		requested: make(chan struct{}),
		forced:    make(chan struct{}),
		waited:    make(chan struct{}),
		signaled:  make(chan struct{}),
	}
}

// AddServer is Add for a net/http Server.
func (d *Drainer) AddServer(name string, srv *http.Server, ln net.Listener) error {
	return d.Add(name, HTTPServer(srv), ln)
}

// Add registers a server and the listener it will serve on. It takes over the server's
// ConnState and BaseContext hooks (calling any hook already set). Before Run, Run starts
// serving it; while Run serves (a reload's new listener), it starts serving at once and
// drains with the others. Once the listeners have begun to stop it is refused.
func (d *Drainer) Add(name string, srv Server, ln net.Listener) error {
	s := &server{name: name, http: srv, ln: ln, gone: make(chan struct{}, 1), served: make(chan struct{})}
	connState, baseContext := srv.Hooks()
	prev := *connState
	*connState = func(c net.Conn, st http.ConnState) {
		d.t.connState(c, st)
		s.connState(d.t, c, st)
		if prev != nil {
			prev(c, st)
		}
	}
	prevBase := *baseContext
	*baseContext = func(ln net.Listener) context.Context {
		ctx := context.Background()
		if prevBase != nil {
			ctx = prevBase(ln)
		}
		return context.WithValue(ctx, serverKey{}, s)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Phase() >= PhaseStopping {
		return fmt.Errorf("not serving %s on %s: the drain has begun", name, ln.Addr())
	}
	d.servers = append(d.servers, s)
	if d.running {
		d.serve(s)
	}
	return nil
}

// serve runs Serve for s until the drain or Remove closes it. d.mu is held.
func (d *Drainer) serve(s *server) {
	d.serving.Go(func() {
		defer close(s.served)
		err := s.http.Serve(s.ln)
		if d.Phase() < PhaseStopping && !s.removing.Load() && !errors.Is(err, http.ErrServerClosed) {
			d.fail(fmt.Errorf("serve %s on %s: %w", s.name, s.ln.Addr(), err))
		}
	})
}

// Remove drains the server serving on ln, alone, as a shutdown drains them all: its
// listener stops accepting once no handshake to it is under way and its accept queue is
// empty, and stops for good (a Remover); its responses ask their clients to close; its
// keep-alive connections close once idle for the idle window plus their round trip. It
// returns once the last of its connections has closed, or at the grace period, when
// what is left on it is closed (and reported in the error). Upgraded connections
// (WebSockets) it served are tracked by the drain and go on until they end. Nothing
// happens if the drain has begun: it drains the server anyway.
func (d *Drainer) Remove(ln net.Listener) error {
	d.mu.Lock()
	i := slices.IndexFunc(d.servers, func(s *server) bool { return s.ln == ln })
	if i < 0 || d.Phase() >= PhaseStopping {
		d.mu.Unlock()
		return nil
	}
	s := d.servers[i]
	d.servers = slices.Delete(d.servers, i, i+1)
	d.mu.Unlock()

	s.removeAt.Store(time.Now().UnixNano())
	s.removing.Store(true)
	d.t.removing.Add(1)
	defer d.t.removing.Add(-1)
	grace, cancel := context.WithTimeout(context.Background(), d.opts.Grace)
	defer cancel()
	var errs []error
	if _, err := stopListener(grace, s.ln, true); err != nil {
		errs = append(errs, err)
	}
	s.waitServed(grace) // what it accepted before the stop is counted in s.open
	// Connections idle now get the whole window from now; later ones from their idle turn.
	s.conns.Range(func(k, _ any) bool {
		if v, ok := d.t.conn.Load(k); ok {
			if ci := v.(*connInfo); http.ConnState(ci.state.Load()) == http.StateIdle {
				d.t.closeWhenIdleLongEnough(k.(net.Conn), ci, s.removeAt.Load())
			}
		}
		return true
	})
	for s.open.Load() > 0 {
		select {
		case <-s.gone:
		case <-grace.Done():
			if n := s.open.Load(); n > 0 {
				errs = append(errs, fmt.Errorf("%d connection(s) still open on %s after the grace period (%v) were closed", n, s.ln.Addr(), d.opts.Grace))
			}
			s.http.Close()
			return errors.Join(errs...)
		}
	}
	s.http.Close() // ends its Serve
	return errors.Join(errs...)
}

// OnStopAccepting adds fn to the stop-accepting step: it runs, in its own goroutine, when
// the listeners stop, with a context that ends with the grace period. It is for telling
// clients of multiplexed protocols to go away, e.g. the Shutdown of the http.Server that
// owns HTTP/2 connections, which sends them GOAWAY. Call before Run.
func (d *Drainer) OnStopAccepting(fn func(ctx context.Context)) {
	d.onStop = append(d.onStop, fn)
}

// OnDrainStart adds fn to the signal step: it runs, in its own goroutine, the moment a
// drain begins, while the delay still serves. It is for telling clients of multiplexed
// protocols to go away as HTTP/1 clients are told with "Connection: close", e.g. the
// HTTP/2 GOAWAY of package h2serve. fn must return promptly. Call before Run.
func (d *Drainer) OnDrainStart(fn func()) {
	d.onDrain = append(d.onDrain, fn)
}

// Observe adds an observer of finished exchanges. Call before Run.
func (d *Drainer) Observe(o Observer) { d.observers = append(d.observers, o) }

// Handler wraps next with the drain's request accounting. Every handler of every server
// added to the Drainer should be wrapped, or the drain cannot wait for its requests.
func (d *Drainer) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.t.requests.Add(1)
		x := &exchange{ResponseWriter: w, t: d.t}
		x.Request = r
		x.Start = time.Now()
		if r.Body != nil && r.Body != http.NoBody {
			x.body.ReadCloser = r.Body
			r.Body = &x.body
		}
		x.proto, x.path = protocolOf(r), shownPath(r)
		d.t.reg.add(x)
		defer d.finish(x)
		next.ServeHTTP(x, r)
	})
}

func (d *Drainer) finish(x *exchange) {
	x.finish()
	if d.t.closing.Load() {
		d.noteFinished(x)
	}
	d.t.reg.remove(x)
	if c := x.cut.Load(); c != 0 {
		x.CutByDrain = cutNames[c]
	}
	for _, o := range d.observers {
		o.Observe(&x.Exchange)
	}
	if d.t.closing.Load() && !d.aborting.Load() {
		d.drained.Add(1)
	}
	if d.t.closing.Load() && AnsweredForTheApp(&x.Exchange) {
		d.upstreamFailed.Add(1)
	}
	d.t.done(&d.t.requests)
}

// AnsweredForTheApp reports whether drainproxy answered x itself with 502, 503 or 504
// because the app could not (refused, reset, timed out, or not running): a request the
// client lost although the proxy was still serving.
func AnsweredForTheApp(x *Exchange) bool {
	switch x.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return x.UpstreamError != ""
	}
	return false
}

// Phase is the current phase.
func (d *Drainer) Phase() Phase { return Phase(d.phase.Load()) }

// Ready reports whether the process should receive traffic: serving, or in the first
// ReadinessFailDelay of a drain.
func (d *Drainer) Ready() bool { return d.Phase() == PhaseReady || d.readinessHeld() }

// readinessHeld reports whether the drain has begun but readiness stays true for
// Options.ReadinessFailDelay.
func (d *Drainer) readinessHeld() bool {
	until := d.readyUntil.Load()
	return until != 0 && d.Phase() == PhaseDraining && time.Now().UnixNano() < until
}

// Stats is a snapshot of what is in flight, for metrics and status pages.
type Stats struct {
	Phase            Phase
	InflightRequests int64
	Upgraded         int64
	OpenConnections  int64
	Drained          int64
	Aborted          int64 // requests closed by the deadline; set once the grace period ends
	// ReadinessHeld: the drain has begun (PhaseDraining), but readiness stays true for
	// Options.ReadinessFailDelay.
	ReadinessHeld bool
	// UpstreamFailed is Summary.UpstreamFailed so far.
	UpstreamFailed int64
	// What the deadline cut, as in Summary.
	CutBeforeHead, CutMidResponse, UpgradesClosed int64
	// Drain is where the drain is (nil before it begins; progress.go).
	Drain *DrainClock
	// Unserved is Summary.Unserved; set once the listeners have stopped.
	Unserved int64
}

// Stats returns a snapshot of the counters.
func (d *Drainer) Stats() Stats {
	return Stats{
		Phase:            d.Phase(),
		InflightRequests: d.t.requests.Load(),
		Upgraded:         d.t.upgrades.Load(),
		OpenConnections:  d.t.conns.Load(),
		Drained:          d.drained.Load(),
		Aborted:          d.aborted.Load(),
		UpstreamFailed:   d.upstreamFailed.Load(),
		CutBeforeHead:    d.cuts.beforeHead.Load(),
		CutMidResponse:   d.cuts.midResponse.Load(),
		UpgradesClosed:   d.cuts.tunnels.Load(),
		Drain:            d.clock.Load(),
		Unserved:         d.unserved.Load(),
		ReadinessHeld:    d.readinessHeld(),
	}
}

// Drain asks for a drain. Only the first call counts; it is safe from any goroutine and
// before Run (a signal during start-up still ends in a clean exit).
func (d *Drainer) Drain(reason string) {
	d.reqOnce.Do(func() {
		d.reason.Store(reason)
		d.t.beginClosing()
		close(d.requested)
	})
}

// DrainAndHold asks for a drain, as Drain does, and for Run to return only once the
// process is told to stop after it: a trapped SIGTERM or SIGINT (at any time, before
// the drain ends included) or Run's context. Until then the process serves nothing,
// readiness stays false and whatever does not belong to the drain (the admin listener)
// goes on. It is for a drain that a Kubernetes preStop hook starts in a native sidecar
// (restartPolicy: Always), which must not exit before kubelet sends it SIGTERM.
func (d *Drainer) DrainAndHold(reason string) {
	d.hold.Store(true)
	d.Drain(reason)
}

// Force cuts a drain short: whatever is open is closed now. It implies Drain.
func (d *Drainer) Force(reason string) {
	d.Drain(reason)
	d.forceOnce.Do(func() {
		d.log.Warn("forcing the drain: closing whatever is still open", "reason", reason)
		close(d.forced)
	})
}

// fail records a runtime failure and starts a drain.
func (d *Drainer) fail(err error) {
	d.failOnce.Do(func() { d.failure = err })
	d.log.Error("runtime failure, draining", "error", err.Error())
	d.Drain("failure: " + err.Error())
}

// TrapSignals turns SIGTERM and SIGINT into a drain, and the same signals again into Force.
// The channel is buffered so that a signal is not missed while the process is busy. stop
// undoes it and waits for the goroutine that reads the signals.
func (d *Drainer) TrapSignals() (stop func()) {
	n := 0
	return sigtrap.Handle(func(s os.Signal) {
		d.signalOnce.Do(func() { close(d.signaled) })
		if n++; n == 1 {
			d.Drain("signal " + signalName(s))
		} else {
			d.Force("signal " + signalName(s) + " again")
		}
	}, syscall.SIGTERM, syscall.SIGINT)
}

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.String()
}

func (d *Drainer) setPhase(p Phase) { d.phase.Store(int32(p)) }

// Run serves on every added server and returns after the whole drain sequence. Canceling
// ctx requests a drain, like SIGTERM.
func (d *Drainer) Run(ctx context.Context) Summary {
	d.mu.Lock()
	d.running = true
	for _, s := range d.servers {
		d.serve(s)
	}
	d.mu.Unlock()
	stopOnCancel := context.AfterFunc(ctx, func() { d.Drain("context canceled") })
	defer stopOnCancel()

	// 1. ready
	start := time.Now()
	wasReady := d.becomeReady()
	if wasReady {
		d.log.Info("ready", "took", logdur.Since(start))
	}

	// 2. signal
	<-d.requested
	begun := time.Now()
	if rfd := d.opts.ReadinessFailDelay; rfd > 0 && wasReady {
		d.readyUntil.Store(begun.Add(rfd).UnixNano())
	}
	d.setPhase(PhaseDraining)
	if d.readyUntil.Load() != 0 {
		d.log.Info("drain started", "reason", d.reason.Load(), "phase", PhaseDraining.String(),
			"readiness_fail_delay", d.opts.ReadinessFailDelay.String())
	} else {
		d.log.Info("drain started", "reason", d.reason.Load(), "phase", PhaseDraining.String())
	}
	d.enterStep(StepDelay, begun, wasReady)
	var drainHooks sync.WaitGroup
	for _, fn := range d.onDrain {
		drainHooks.Go(fn)
	}
	defer drainHooks.Wait()

	// 3. delay
	if d.opts.DelayAuto && wasReady {
		d.autoDelay(begun) // autodelay.go
	} else if d.opts.Delay > 0 && wasReady {
		d.sleep(d.opts.Delay)
		d.log.Info("drain delay over", "took", logdur.Since(begun))
	}

	// 4. stop accepting
	step := time.Now()
	d.setPhase(PhaseStopping)
	d.enterStep(StepStopAccepting, step, true)
	grace, cancelGrace := context.WithTimeout(context.Background(), d.opts.Grace)
	defer cancelGrace()
	go func() { // a second signal ends the grace period at once
		select {
		case <-d.forced:
			cancelGrace()
		case <-grace.Done():
		}
	}()
	var hooks sync.WaitGroup
	for _, fn := range d.onStop {
		hooks.Go(func() { fn(grace) })
	}
	left := d.stopAccepting(grace)
	d.log.Info("stopped accepting", "took", logdur.Since(step), "left_in_accept_queue", left)

	// 5. wait
	step = time.Now()
	d.enterStep(StepWait, step, true)
	stopProgress := d.logProgress(grace) // progress.go
	idle := d.t.waitIdle(grace.Done())
	stopProgress()
	var aborted int64
	if idle {
		d.log.Info("in-flight requests finished", d.lastFinishedFields(time.Since(step))...)
	} else {
		// 6. deadline
		d.enterStep(StepDeadline, time.Now(), true)
		d.aborting.Store(true)
		d.markCuts() // account.go
		aborted = d.t.requests.Load()
		d.aborted.Store(aborted)
		why := "grace period over, closing what is still open"
		if Closed(d.forced) { // a second signal or a forced admin drain cut it short
			why = "drain forced before the grace period was over, closing what is still open"
		}
		d.log.Warn(why, "took", logdur.Since(step), "grace", d.opts.Grace.String(),
			"requests", aborted, "upgraded", d.t.upgrades.Load(), "connections", d.t.conns.Load())
		d.closeAll()
		// Handlers whose connections were closed return promptly; give them a moment so
		// that their exchanges are observed (logged) before the workers flush.
		settle, cancel := context.WithTimeout(context.Background(), time.Second)
		d.t.waitIdle(settle.Done())
		cancel()
	}
	for _, s := range d.currentServers() {
		s.http.Close() // nothing is left on them; this ends Serve
	}
	d.serving.Wait()
	cancelGrace() // everything is closed: stop-accepting hooks may return now
	hooks.Wait()
	d.setPhase(PhaseStopped)
	close(d.waited)

	// 7. stop the app
	if d.opts.StopApp != nil {
		step = time.Now()
		d.enterStep(StepStopApp, step, true)
		if err := d.opts.StopApp(context.Background()); err != nil {
			d.fail(fmt.Errorf("stop the app: %w", err))
		}
		d.log.Info("app stopped", "took", logdur.Since(step))
	}

	// 8. flush
	step = time.Now()
	d.enterStep(StepFlush, step, true)
	unfinished := d.Workers.Wait(d.opts.FlushTimeout)
	if len(unfinished) > 0 {
		d.log.Error("background workers did not finish in time", "workers", unfinished,
			"flush_timeout", d.opts.FlushTimeout.String())
	} else {
		d.log.Info("workers flushed", "took", logdur.Since(step))
	}

	forced := Closed(d.forced)
	sum := Summary{
		Drained: d.drained.Load(),
		Aborted: aborted,
		Took:    time.Since(begun),
		Forced:  forced,
		Workers: unfinished,
		Err:     d.failure,
	}
	sum.UpstreamFailed = d.upstreamFailed.Load()
	sum.CutBeforeHead, sum.CutMidResponse, sum.UpgradesClosed = d.cuts.beforeHead.Load(), d.cuts.midResponse.Load(), d.cuts.tunnels.Load()
	if sum.Unserved = d.unserved.Load(); sum.Unserved > 0 {
		d.log.Warn("the listeners closed connections the kernel had accepted without serving them: their clients saw a reset (see \"stopping the listener\" above)",
			"unserved", sum.Unserved)
	}
	if sum.UpstreamFailed > 0 {
		d.log.Warn("the app failed requests during the drain: drainproxy answered them 502/503/504 itself; if the app stopped before drainproxy had drained, see the README's sidecar recipes",
			"upstream_failed", sum.UpstreamFailed)
	}
	d.log.Info("drain complete", sum.logFields()...) // summaryfile.go
	d.enterStep(StepDone, time.Now(), true)
	d.writeTerminationLog(sum)

	// 9. hold (DrainAndHold only): stay until told to stop, then return at once.
	if d.hold.Load() {
		d.holdUntilSignal(ctx, sum.ExitCode())
	}
	return sum
}

// holdUntilSignal waits for a trapped signal or ctx, after a drain DrainAndHold asked for.
func (d *Drainer) holdUntilSignal(ctx context.Context, code int) {
	if Closed(d.signaled) {
		d.log.Info("the drain was asked to hold, but a signal has come already: exiting", "exit_code", code)
		return
	}
	step := time.Now()
	d.log.Info("drained; serving nothing and holding until SIGTERM (the drain was asked with hold)", "exit_code", code)
	select {
	case <-d.signaled:
	case <-ctx.Done():
	}
	d.log.Info("hold over: exiting", "held", logdur.Since(step), "exit_code", code)
}

// becomeReady runs the gate and turns readiness on, unless a drain is requested first.
func (d *Drainer) becomeReady() bool {
	if gate := d.opts.Gate; gate != nil {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-d.requested:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := gate(ctx)
		cancel()
		if err != nil {
			if !Closed(d.requested) {
				d.fail(err)
			}
			return false
		}
	}
	if Closed(d.requested) {
		return false
	}
	d.setPhase(PhaseReady)
	// A Drain that raced the line above still wins: Run moves on to PhaseDraining.
	return true
}

func (d *Drainer) sleep(dur time.Duration) {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
	case <-d.forced:
	}
}

// currentServers is the servers serving now.
func (d *Drainer) currentServers() []*server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.servers)
}

// stopAccepting stops every listener in parallel and returns how many connections were
// left in accept queues when ctx ended.
func (d *Drainer) stopAccepting(ctx context.Context) int {
	var wg sync.WaitGroup
	var left atomic.Int64
	for _, s := range d.currentServers() {
		wg.Go(func() {
			n, err := stopListener(ctx, s.ln, false)
			left.Add(int64(n))
			if !s.waitServed(ctx) {
				d.log.Debug("the server still accepts after its listener stopped", "listener", s.name, "address", s.ln.Addr().String())
			}
			if err != nil {
				d.log.Warn("stopping the listener", "listener", s.name, "address", s.ln.Addr().String(), "error", err.Error())
			}
			if u, ok := s.ln.(UnservedCounter); ok {
				d.unserved.Add(u.Unserved())
				if method, why := u.StopMethod(); method != "" {
					kv := []any{"listener", s.name, "address", s.ln.Addr().String(), "method", method}
					if why != "" {
						kv = append(kv, "why", why)
					}
					d.log.Info("listener stopped", kv...)
				}
			}
		})
	}
	wg.Wait()
	return int(left.Load())
}

// stopListener stops ln as well as it can: for good when remove is set and ln is a
// Remover, else by StopAccepting, else by closing it.
func stopListener(ctx context.Context, ln net.Listener, remove bool) (int, error) {
	if r, ok := ln.(Remover); ok && remove {
		return r.Remove(ctx)
	}
	if sa, ok := ln.(StopAccepter); ok {
		return sa.StopAccepting(ctx)
	}
	return 0, ln.Close()
}

// closeAll ends everything still open: the deadline step.
func (d *Drainer) closeAll() {
	for _, s := range d.currentServers() {
		s.http.Close()
	}
	d.t.closeUpgraded()
}

// Closed reports whether ch has been closed, without waiting: for the drain's signal
// channels (Requested, Waited, and the like), a nil channel being never closed.
func Closed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
