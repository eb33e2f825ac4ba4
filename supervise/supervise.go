// Package supervise runs the app behind drainproxy as a child process and makes it behave
// like a well-drained service: it starts the app in its own process group (so a Ctrl-C in
// a terminal reaches drainproxy only and the app serves until the drain is over), passes
// its output through, gates readiness on the app answering, restarts it by policy, stops
// it only after the proxy has drained (stop signal, then SIGKILL after a timeout), passes
// chosen signals on to it, and reaps the orphans it leaves behind.
//
// drainproxy uses it through App, which adds zero-downtime restarts (a second instance on
// a fresh port, then a switch) to one Supervisor per instance:
//
//	app, err := supervise.NewApp(supervise.AppOptions{Options: opts, Switch: swapProxy})
//	drain.Options{Gate: app.Gate, StopApp: app.Stop}
//	app.AbortOn(d.Requested())           // a drain wins over a restart not yet switched
//	d.Handler(proxy.AppGuard(app, p))    // 503 + Retry-After while the app is down
//	app.Start(d.Drain)                   // first instance; the restart policy runs from here
//	app.Restart("POST /restart")         // SIGHUP and POST /restart
//	code := app.ExitCode(summary.ExitCode())
//	app.Close()
//
// All waiting for child processes goes through one Reaper per process (reaper.go); the
// supervisor never calls wait itself, so reaping orphans cannot steal the app's status.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/internal/logdur"
)

// Options configures a Supervisor. The zero value of every field but Command is usable.
type Options struct {
	// Command is the app and its arguments. "{port}" in any of them is replaced by the
	// upstream's port.
	Command []string
	// Upstream is where the app is expected to answer. When it has a port, the app gets
	// PORT=<port> in its environment and {port} in its arguments; the default readiness
	// check connects to it. Nil: no PORT, and Check must be set.
	Upstream *url.URL
	// Env is the app's environment (nil: drainproxy's own). PORT is added to it or
	// replaced in it when the upstream's port is known.
	Env []string
	// Dir is the app's working directory ("": drainproxy's).
	Dir string
	// Stdout and Stderr receive the app's output (nil: drainproxy's stdout and stderr).
	// A file with no OutputPrefix is handed to the app as it is, so its output is passed
	// through byte for byte; otherwise lines are copied with the prefix.
	Stdout, Stderr io.Writer
	// OutputPrefix is written before every line of the app's output ("": none).
	OutputPrefix string
	// StopSignal asks the app to stop once the proxy has drained (zero: SIGTERM). It goes
	// to the app's whole process group, as a Ctrl-C in a terminal would, so that the
	// children of a wrapper script stop too.
	StopSignal syscall.Signal
	// StopTimeout is how long the app may take to exit after StopSignal before its process
	// group is killed with SIGKILL (zero: 10s).
	StopTimeout time.Duration
	// StartTimeout bounds the wait in Gate for the app to answer (zero: 30s).
	StartTimeout time.Duration
	// WaitReady returns nil once the app answers, or an error when ctx ends first. Gate
	// calls it for the first start (nil: run Check every 100ms until it passes), e.g. a
	// health checker's WaitHealthy.
	WaitReady func(ctx context.Context) error
	// Check checks once that the app answers. After a restart it runs every 100ms until
	// it passes, and only then does the Guard let requests through again; a health
	// checker that still remembers the app that died cannot tell that the new one is up
	// (nil: connect to Upstream over TCP, or to its unix socket).
	Check func(ctx context.Context) error
	// Restart is the restart policy ("": RestartNever).
	Restart Restart
	// MaxRestarts is how many restarts are allowed within RestartWindow before the
	// supervisor gives up (zero: 5).
	MaxRestarts int
	// RestartWindow is the window for MaxRestarts (zero: 1m).
	RestartWindow time.Duration
	// BackoffMin and BackoffMax bound the wait before a restart, which doubles from min to
	// max (zero: 100ms and 10s). An app that ran for BackoffMax starts over at min.
	BackoffMin, BackoffMax time.Duration
	// ForwardSignals are passed on to the app's process (not its group) when drainproxy
	// receives them. ParseForwardSignal names the ones allowed.
	ForwardSignals []syscall.Signal
	// Reaper waits for the app and reaps orphans. Nil: New starts one with Orphans set
	// and Close closes it. Share one Reaper when a process supervises several apps.
	Reaper *Reaper
	// Logger receives the app's lifecycle lines (zero: discard).
	Logger hclog.Logger
}

// Supervisor runs one app. Build it with New, then Start it once.
type Supervisor struct {
	opts      Options
	log       hclog.Logger
	path      string   // the resolved executable
	args      []string // Command with {port} replaced
	env       []string
	port      string                 // "" when unknown
	reaper    atomic.Pointer[Reaper] // set by Start; read by OrphansReaped at any time
	ownReaper bool

	mu       sync.Mutex
	cur      *child // the running app; nil between runs
	stopping bool
	end      ending // how supervision ended; endRunning until then

	answering atomic.Bool   // the current child has answered: the Guard lets requests through
	restarts  atomic.Uint64 // restarts done
	retryAt   atomic.Int64  // unix nanoseconds of the next planned start, for Retry-After

	stop     chan struct{} // closed by Stop: no more starts, end every wait
	loopDone chan struct{} // closed when the restart loop has returned
	closing  chan struct{} // closed by Close: stop forwarding signals
	// answerers are the goroutines that open the Guard after a restart; forwarding is the
	// one that passes signals on. Stop waits for the first, Close for the second.
	answerers  sync.WaitGroup
	forwarding sync.WaitGroup
	started    bool
	onExitFn   func(reason string) // Start's onExit

	stopOnce, closeOnce sync.Once
	stopErr             error
}

// ending is how supervision ended.
type ending struct {
	kind endKind
	exit Exit
}

type endKind int

const (
	endRunning endKind = iota
	endExited          // the app exited on its own and was not restarted
	endGaveUp          // restarts ran out, or a restart could not start
	endStopped         // Stop stopped it with the stop signal
	endKilled          // Stop had to kill it with SIGKILL
)

// child is one run of the app.
type child struct {
	proc           *Process
	stdout, stderr *outputPipe
	started        time.Time
}

// New validates opts and resolves the command; nothing is started yet.
func New(opts Options) (*Supervisor, error) {
	if len(opts.Command) == 0 || opts.Command[0] == "" {
		return nil, errors.New("no app command: give it after -- or as upstream { command = [...] }")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.StopSignal == 0 {
		opts.StopSignal = syscall.SIGTERM
	}
	setDefault(&opts.StopTimeout, 10*time.Second)
	setDefault(&opts.StartTimeout, 30*time.Second)
	setDefault(&opts.RestartWindow, time.Minute)
	setDefault(&opts.BackoffMin, 100*time.Millisecond)
	setDefault(&opts.BackoffMax, 10*time.Second)
	setDefault(&opts.MaxRestarts, 5)
	if opts.Restart == "" {
		opts.Restart = RestartNever
	}
	if _, err := ParseRestart(string(opts.Restart)); err != nil {
		return nil, fmt.Errorf("restart policy: %w", err)
	}
	for _, sig := range opts.ForwardSignals {
		if _, err := ParseForwardSignal(SignalName(sig)); err != nil {
			return nil, fmt.Errorf("forward signals: %w", err)
		}
	}
	if opts.Check == nil && opts.Upstream == nil {
		return nil, errors.New("no way to tell when the app answers: set Upstream or Check")
	}

	s := &Supervisor{
		opts:     opts,
		log:      opts.Logger,
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		closing:  make(chan struct{}),
	}
	if opts.Upstream != nil {
		s.port = opts.Upstream.Port()
	}
	s.args = make([]string, len(opts.Command))
	for i, a := range opts.Command {
		if strings.Contains(a, "{port}") && s.port == "" {
			return nil, fmt.Errorf("the app command uses {port} but the upstream %q has no port; write one, e.g. -upstream http://127.0.0.1:3000", urlString(opts.Upstream))
		}
		s.args[i] = strings.ReplaceAll(a, "{port}", s.port)
	}
	path, err := exec.LookPath(s.args[0])
	if err != nil {
		return nil, fmt.Errorf("app command %q: %w; give a path to an executable or a program on PATH", s.args[0], err)
	}
	s.path = path
	s.env = appEnv(opts.Env, s.port)
	return s, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func urlString(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}

// appEnv is base (nil: this process's environment) with PORT set to port when it is known.
func appEnv(base []string, port string) []string {
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+1)
	for _, kv := range base {
		if port != "" && strings.HasPrefix(kv, "PORT=") {
			continue
		}
		env = append(env, kv)
	}
	if port != "" {
		env = append(env, "PORT="+port)
	}
	return env
}

// Start starts the app and the loop that restarts it by policy, and begins forwarding
// signals. Call it once. onExit (may be nil) is called once, from the supervisor's
// goroutine, when supervision ends on its own: the app exited and the policy does not
// restart it, or restarts ran out; reason says why. drainproxy passes its Drain. It is
// not called for an exit that Stop caused.
func (s *Supervisor) Start(onExit func(reason string)) error {
	if s.started {
		return errors.New("supervise: Start called twice")
	}
	s.started = true
	s.onExitFn = onExit
	if s.opts.Reaper == nil {
		r, err := NewReaper(ReaperOptions{Orphans: true, Logger: s.log.Named("reaper")})
		if err != nil {
			return err
		}
		s.reaper.Store(r)
		s.ownReaper = true
	} else {
		s.reaper.Store(s.opts.Reaper)
	}
	if err := s.portFree(); err != nil {
		close(s.loopDone)
		return err
	}
	c, err := s.spawn()
	if err != nil {
		close(s.loopDone)
		return err
	}
	go s.supervise(c)
	if len(s.opts.ForwardSignals) > 0 {
		s.forwardSignals()
	}
	return nil
}

// portWait is how long Start waits for the app's address to become free: a previous copy
// of the app (drainproxy restarted by systemd, say) may still be closing it. nginx retries
// its bind for about as long.
const portWait = 2 * time.Second

// portFree fails when something still answers where the app is to listen after portWait.
// That process would pass every readiness check on the app's behalf while the app itself
// fails with "address already in use".
func (s *Supervisor) portFree() error {
	if s.opts.Upstream == nil {
		return nil
	}
	network, addr := upstreamAddress(s.opts.Upstream)
	deadline := time.Now().Add(portWait)
	for logged := false; ; logged = true {
		conn, err := net.DialTimeout(network, addr, 500*time.Millisecond)
		if err != nil {
			return nil // refused (or unreachable): the app's own failure will say more
		}
		conn.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("another process already answers on %s, where the app is to listen: stop it, or give the app another port with -upstream (the app would fail with \"address already in use\" while that process answered for it)", addr)
		}
		if !logged {
			s.log.Warn("another process answers where the app is to listen; waiting for it to go", "address", addr, "wait", portWait.String())
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-s.stop:
			return errors.New("stopping")
		}
	}
}

// spawn starts one run of the app, unless Stop has begun.
func (s *Supervisor) spawn() (*child, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, errors.New("stopping")
	}
	stdout, err := newOutput(s.opts.Stdout, s.opts.OutputPrefix)
	if err != nil {
		return nil, fmt.Errorf("pipe for the app's stdout: %w", err)
	}
	stderr, err := newOutput(s.opts.Stderr, s.opts.OutputPrefix)
	if err != nil {
		stdout.started()
		stdout.wait(closedChan())
		return nil, fmt.Errorf("pipe for the app's stderr: %w", err)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	// The app reads nothing from drainproxy's stdin: in a terminal it is in a background
	// process group, and reading the terminal would stop it (SIGTTIN).
	proc, err := s.reaper.Load().start(procSpec{
		path:  s.path,
		args:  s.args,
		env:   s.env,
		dir:   s.opts.Dir,
		files: []uintptr{devNull.Fd(), stdout.childEnd.Fd(), stderr.childEnd.Fd()},
	})
	devNull.Close()
	stdout.started()
	stderr.started()
	if err != nil {
		stdout.wait(closedChan())
		stderr.wait(closedChan())
		return nil, fmt.Errorf("start the app %q: %w", s.path, err)
	}
	c := &child{proc: proc, stdout: stdout, stderr: stderr, started: time.Now()}
	s.cur = c
	s.log.Info("app started", "pid", proc.Pid, "command", strings.Join(s.args, " "), "port", s.port)
	return c, nil
}

func closedChan() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// outputGrace is how long the app's output may keep flowing after it exited (a process
// it left behind may hold the stream) before the copy is cut.
const outputGrace = time.Second

// waitOutput waits until the app's output has been copied, for at most outputGrace.
func (c *child) waitOutput() {
	t := time.NewTimer(outputGrace)
	defer t.Stop()
	cut := make(chan struct{})
	go func() {
		select {
		case <-t.C:
			close(cut)
		case <-cut:
		}
	}()
	c.stdout.wait(cut)
	c.stderr.wait(cut)
	select {
	case <-cut:
	default:
		close(cut)
	}
}

// supervise is the restart loop: it waits for each run of the app to end and starts the
// next one by policy, until Stop or the policy ends it.
func (s *Supervisor) supervise(c *child) {
	defer close(s.loopDone)
	budget := newRestartBudget(s.opts.BackoffMin, s.opts.BackoffMax, s.opts.MaxRestarts, s.opts.RestartWindow)
	for {
		<-c.proc.Done()
		exit := c.proc.Exit()
		ran := time.Since(c.started)
		s.answering.Store(false)
		c.waitOutput()

		s.mu.Lock()
		s.cur = nil
		stopping := s.stopping
		s.mu.Unlock()
		if stopping {
			return // Stop reports this exit
		}
		pairs := append([]any{"pid", c.proc.Pid, "ran", logdur.Format(ran)}, exit.logPairs()...)
		if !s.opts.Restart.wants(exit) {
			s.log.Info("app exited, not restarting it", append(pairs, "restart", s.opts.Restart)...)
			s.ended(ending{kind: endExited, exit: exit})
			s.onExit("app exited with " + exit.String())
			return
		}
		wait, ok := budget.take(time.Now(), ran)
		if !ok {
			s.log.Error("app keeps exiting, giving up", append(pairs, "restarts", s.restarts.Load(),
				"max_restarts", s.opts.MaxRestarts, "window", s.opts.RestartWindow.String())...)
			s.ended(ending{kind: endGaveUp, exit: exit})
			s.onExit(fmt.Sprintf("app exited %d times within %v (last: %s); gave up", s.opts.MaxRestarts+1, s.opts.RestartWindow, exit))
			return
		}
		s.retryAt.Store(time.Now().Add(wait).UnixNano())
		s.log.Warn("app exited, restarting it", append(pairs, "backoff", wait.String(), "restarts", s.restarts.Load()+1)...)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			return
		}
		next, err := s.spawn()
		if err != nil {
			if s.isStopping() {
				return
			}
			s.log.Error("cannot restart the app, giving up", "error", err.Error())
			s.ended(ending{kind: endGaveUp, exit: exit})
			s.onExit("cannot restart the app: " + err.Error())
			return
		}
		s.restarts.Add(1)
		s.answerers.Add(1)
		go func() {
			defer s.answerers.Done()
			s.awaitAnswer(next)
		}()
		c = next
	}
}

// ended records how supervision ended (the first record wins) and returns it.
func (s *Supervisor) ended(e ending) ending {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end.kind == endRunning {
		s.end = e
	}
	return s.end
}

func (s *Supervisor) onExit(reason string) {
	if s.onExitFn != nil {
		s.onExitFn(reason)
	}
}

func (s *Supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// awaitAnswer opens the Guard once a restarted app answers. If it does not answer within
// the start timeout the Guard opens anyway, so that the proxy's own errors and the health
// checks show what is wrong instead of a 503 that never ends.
func (s *Supervisor) awaitAnswer(c *child) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StartTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
		case <-c.proc.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	err := s.pollUntilAnswers(ctx)
	if err != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return // stopped, or the app exited again
	}
	if err != nil {
		s.log.Warn("restarted app does not answer; passing requests to it anyway",
			"pid", c.proc.Pid, "start_timeout", s.opts.StartTimeout.String(), "address", s.address())
	} else {
		s.log.Info("app answers", "pid", c.proc.Pid, "took", logdur.Since(c.started))
	}
	s.markAnswering(c)
}

// markAnswering opens the Guard if c is still the running app.
func (s *Supervisor) markAnswering(c *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != c {
		return
	}
	select {
	case <-c.proc.Done():
	default:
		s.answering.Store(true)
	}
}

// pollUntilAnswers runs the check every 100ms until it passes or ctx ends.
func (s *Supervisor) pollUntilAnswers(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		err := s.checkOnce(ctx)
		if err == nil {
			return nil
		}
		// A check that the deadline cut short says only "i/o timeout": keep the one before.
		var ne net.Error
		if last == nil || !errors.As(err, &ne) || !ne.Timeout() {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
	}
}

// checkOnce is Options.Check, or a connect to the upstream.
func (s *Supervisor) checkOnce(ctx context.Context) error {
	if s.opts.Check != nil {
		return s.opts.Check(ctx)
	}
	network, addr := upstreamAddress(s.opts.Upstream)
	dialer := net.Dialer{Timeout: time.Second}
	conn, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// address names where the app is expected to answer, for messages.
func (s *Supervisor) address() string {
	if s.opts.Upstream == nil {
		return "its health check"
	}
	_, addr := upstreamAddress(s.opts.Upstream)
	return addr
}

// upstreamAddress is the network and address to connect to for u.
func upstreamAddress(u *url.URL) (network, addr string) {
	if u.Scheme == "unix" || u.Scheme == "unix+h2c" {
		return "unix", u.Path
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return "tcp", net.JoinHostPort(u.Hostname(), port)
}

// Gate waits until the app answers, for at most the start timeout: drain.Options.Gate.
// Its error names the address it waited for; the drain then stops the app and exits 1.
func (s *Supervisor) Gate(ctx context.Context) error {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	wait := s.pollUntilAnswers
	if s.opts.WaitReady != nil {
		wait = s.opts.WaitReady
	}
	err := wait(wctx)
	var c *child
	if err == nil {
		c, err = s.ownAnswer(wctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // a drain began first
		}
		hint := ""
		if s.port != "" {
			hint = " (it gets PORT=" + s.port + ")"
		}
		return fmt.Errorf("the app did not answer on %s within %v (start_timeout): make it listen there%s, or raise start_timeout if it starts slowly (last check: %v)",
			s.address(), s.opts.StartTimeout, hint, err)
	}
	s.log.Info("app answers", "pid", c.proc.Pid, "address", s.address(), "took", logdur.Since(start))
	s.markAnswering(c)
	return nil
}

// ownAnswer returns once the app's process is running and answers its check, which it
// must pass with that process alive both before and after: an answer from the address
// while the app is down (between a crash and its restart) is not the app's.
func (s *Supervisor) ownAnswer(ctx context.Context) (*child, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if c := s.runningChild(); c != nil && s.checkOnce(ctx) == nil && s.runningChild() == c {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// runningChild is the current run of the app if its process is running, else nil.
func (s *Supervisor) runningChild() *child {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return nil
	}
	select {
	case <-s.cur.proc.Done():
		return nil
	default:
		return s.cur
	}
}

// NotServing says why requests cannot reach the app now, in a few words, or "" when they
// can: readiness follows it, so that a crash-looping app is not ready between restarts.
func (s *Supervisor) NotServing() string {
	if s.answering.Load() {
		return ""
	}
	if s.runningChild() == nil {
		return "app not running (exited; restarting it by policy)"
	}
	return "app started, not answering yet"
}

// Answering reports whether the app is running and has answered since it (re)started:
// proxy.AppGuard lets requests through only then.
func (s *Supervisor) Answering() bool { return s.answering.Load() }

// RetryAfter is the whole seconds until the next planned start, at least 1.
func (s *Supervisor) RetryAfter() int {
	left := time.Until(time.Unix(0, s.retryAt.Load()))
	secs := int((left + time.Second - 1) / time.Second)
	return max(secs, 1)
}

// Running reports whether the app's process is running now (false between a crash and
// its restart, and after it stopped).
func (s *Supervisor) Running() bool { return s.runningChild() != nil }

// Pid is the running app's process id, or 0.
func (s *Supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.proc.Pid
}

// Restarts is how many times the app has been restarted.
func (s *Supervisor) Restarts() uint64 { return s.restarts.Load() }

// OrphansReaped is how many processes left behind by the app have been reaped (by the
// Reaper that New made, or the one in Options).
func (s *Supervisor) OrphansReaped() uint64 {
	r := s.reaper.Load()
	if r == nil {
		return 0
	}
	return r.OrphansReaped()
}

// Stop stops the app: the stop signal to its process group, then SIGKILL to the group
// after the stop timeout (or when ctx ends). It ends the restart loop and returns an
// error when the app had to be killed. drain.Options.StopApp; only the first call acts.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stopApp(ctx) })
	return s.stopErr
}

func (s *Supervisor) stopApp(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	c := s.cur
	s.mu.Unlock()
	close(s.stop)
	var err error
	if c != nil {
		err = s.stopChild(ctx, c)
	}
	<-s.loopDone // it returns promptly: the child has ended, or it was waiting to restart
	s.answerers.Wait()
	return err
}

// killWait bounds the wait for a process to end after SIGKILL; only a process stuck in
// the kernel (uninterruptible I/O) takes longer.
const killWait = 5 * time.Second

func (s *Supervisor) stopChild(ctx context.Context, c *child) error {
	pid := c.proc.Pid
	select {
	case <-c.proc.Done():
		exit := c.proc.Exit()
		s.log.Info("app had already exited", append([]any{"pid", pid}, exit.logPairs()...)...)
		s.ended(ending{kind: endExited, exit: exit})
		return nil
	default:
	}
	sig := s.opts.StopSignal
	s.log.Info("stopping the app", "pid", pid, "signal", SignalName(sig), "stop_timeout", s.opts.StopTimeout.String())
	if err := c.proc.SignalGroup(sig); err != nil && !errors.Is(err, errFinished) {
		s.log.Warn("cannot signal the app", "pid", pid, "signal", SignalName(sig), "error", err.Error())
	}
	t := time.NewTimer(s.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-c.proc.Done():
		exit := c.proc.Exit()
		s.log.Info("app exited", append([]any{"pid", pid}, exit.logPairs()...)...)
		s.ended(ending{kind: endStopped, exit: exit})
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	s.log.Error("app did not exit in time, killing it", "pid", pid, "signal", "SIGKILL",
		"stop_signal", SignalName(sig), "stop_timeout", s.opts.StopTimeout.String())
	if err := c.proc.SignalGroup(syscall.SIGKILL); err != nil && !errors.Is(err, errFinished) {
		s.log.Warn("cannot signal the app", "pid", pid, "signal", "SIGKILL", "error", err.Error())
	}
	kt := time.NewTimer(killWait)
	defer kt.Stop()
	select {
	case <-c.proc.Done():
	case <-kt.C:
		s.ended(ending{kind: endKilled})
		return fmt.Errorf("the app (pid %d) did not exit even %v after SIGKILL", pid, killWait)
	}
	exit := c.proc.Exit()
	s.log.Info("app exited", append([]any{"pid", pid}, exit.logPairs()...)...)
	s.ended(ending{kind: endKilled, exit: exit})
	return fmt.Errorf("the app did not exit within %v of %s; killed it with SIGKILL (raise stop_timeout if it needs longer)",
		s.opts.StopTimeout, SignalName(sig))
}

// ExitCode is drainproxy's exit code in supervised mode, given the drain's (see the
// README): the drain's when it is not 0 (a failure, a forced or aborted drain, the start
// timeout, an app that had to be killed); else 1 when restarts ran out; else the app's
// own code when it exited by itself (128+N when signal N killed it); else 0 when the app
// stopped on the stop signal (killed by it, or exit 0, or 128+its number), or the app's
// code when it exited otherwise.
func (s *Supervisor) ExitCode(drainCode int) int {
	s.mu.Lock()
	end := s.end
	s.mu.Unlock()
	code, why := drainCode, "drain result"
	switch {
	case drainCode != 0:
	case end.kind == endGaveUp:
		code, why = 1, "gave up restarting the app"
	case end.kind == endExited:
		code, why = end.exit.ShellCode(), "the app exited by itself"
	case end.kind == endStopped:
		stopSig := s.opts.StopSignal
		if end.exit.Signal == stopSig || end.exit.Success() || end.exit.Code == 128+int(stopSig) {
			code, why = 0, "the app stopped on "+SignalName(stopSig)
		} else {
			code, why = end.exit.ShellCode(), "the app failed while stopping"
		}
	}
	if code != drainCode {
		s.log.Info("exit code from the app", "exit_code", code, "reason", why)
	}
	return code
}

// forwardSignals passes ForwardSignals on to the running app until Close.
func (s *Supervisor) forwardSignals() {
	ch := make(chan os.Signal, 4)
	sigs := make([]os.Signal, len(s.opts.ForwardSignals))
	for i, sig := range s.opts.ForwardSignals {
		sigs[i] = sig
	}
	signal.Notify(ch, sigs...)
	s.forwarding.Add(1)
	go func() {
		defer s.forwarding.Done()
		defer signal.Stop(ch)
		for {
			select {
			case got := <-ch:
				sig, _ := got.(syscall.Signal)
				s.forward(sig)
			case <-s.closing:
				return
			}
		}
	}()
}

func (s *Supervisor) forward(sig syscall.Signal) {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	if c == nil {
		s.log.Warn("signal not forwarded: the app is not running", "signal", SignalName(sig))
		return
	}
	if err := c.proc.Signal(sig); err != nil {
		s.log.Warn("signal not forwarded", "signal", SignalName(sig), "pid", c.proc.Pid, "error", err.Error())
		return
	}
	s.log.Info("forwarded a signal to the app", "signal", SignalName(sig), "pid", c.proc.Pid)
}

// Close stops the app if Stop has not, stops forwarding signals, and closes the Reaper
// that New made. Call it once everything else is done (defer it after New).
func (s *Supervisor) Close() {
	s.closeOnce.Do(func() {
		if s.started {
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.StopTimeout+killWait)
			s.Stop(ctx)
			cancel()
		}
		close(s.closing)
		s.forwarding.Wait()
		if s.ownReaper {
			s.reaper.Load().Close()
		}
	})
}
