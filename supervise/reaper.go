package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// Reaper owns every wait for child processes in this process. It is the one place that
// calls wait4, so that reaping orphans (wait4 on any child) can never steal the exit
// status of the app: the status of a process started through the Reaper is delivered to
// its Process, and anything else that ends is an orphan, reaped and counted.
//
// Because it may reap any child, nothing else in the process may start child processes
// and wait for them (os/exec's Cmd.Wait would race it and lose) while a Reaper with
// Orphans runs. drainproxy starts children only through this package.
//
// Every reap happens with mu held, and so do starting and signaling a process. A process
// that is not reaped keeps its pid (a zombie still holds it), so a signal sent while mu is
// held and the process is not marked done always reaches the right process, never a new
// one that reused the number.
type Reaper struct {
	log     hclog.Logger
	orphans bool

	mu       sync.Mutex
	children map[int]*Process // started here and not yet reaped

	reaped atomic.Uint64 // orphans reaped

	sigchld chan os.Signal
	quit    chan struct{}
	exited  chan struct{}
	once    sync.Once
}

// ReaperOptions configures a Reaper.
type ReaperOptions struct {
	// Orphans makes the process a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER):
	// processes that the app leaves behind are re-parented to this process instead of to
	// init, and the Reaper reaps every child that ends, so none stays a zombie. As PID 1
	// of a container the kernel re-parents orphans here anyway; Orphans reaps them.
	// Without Orphans only processes started through the Reaper are waited for.
	Orphans bool
	// Logger receives a debug line per orphan reaped (zero: discard).
	Logger hclog.Logger
}

// NewReaper starts the reaper. There should be one per process; Close it after every
// process started through it has been stopped.
func NewReaper(opts ReaperOptions) (*Reaper, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Orphans {
		if err := becomeSubreaper(); err != nil {
			return nil, fmt.Errorf("become a subreaper to reap orphaned processes: %w", err)
		}
	}
	r := &Reaper{
		log:      opts.Logger,
		orphans:  opts.Orphans,
		children: map[int]*Process{},
		// One pending signal is enough: every wake-up reaps everything that has ended.
		sigchld: make(chan os.Signal, 1),
		quit:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
	signal.Notify(r.sigchld, syscall.SIGCHLD)
	go r.loop()
	return r, nil
}

// Close stops reaping and waits for the reaper's goroutine. Processes still running are
// not touched, and their exits are no longer reported.
func (r *Reaper) Close() {
	r.once.Do(func() {
		signal.Stop(r.sigchld)
		close(r.quit)
		<-r.exited
	})
}

// OrphansReaped is how many processes not started here (orphans) have been reaped.
func (r *Reaper) OrphansReaped() uint64 { return r.reaped.Load() }

func (r *Reaper) loop() {
	defer close(r.exited)
	r.reapAll() // anything that ended before the signal was subscribed
	for {
		select {
		case <-r.sigchld:
			r.reapAll()
		case <-r.quit:
			return
		}
	}
}

// reapAll reaps every child that has ended. SIGCHLDs coalesce, so one wake-up may stand
// for many exits; the loop is bounded by the number of ended children.
func (r *Reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.orphans {
		for pid, p := range r.children {
			var ws syscall.WaitStatus
			got, err := wait4(pid, &ws)
			if err == nil && got == pid {
				r.deliver(p, ws)
			}
		}
		return
	}
	for {
		var ws syscall.WaitStatus
		pid, err := wait4(-1, &ws)
		if err != nil || pid <= 0 { // ECHILD: no children at all; 0: none has ended
			return
		}
		if p, ok := r.children[pid]; ok {
			r.deliver(p, ws)
			continue
		}
		r.reaped.Add(1)
		r.log.Debug("reaped an orphaned process", "pid", pid, "exit", exitFromWaitStatus(ws).String())
	}
}

// wait4 is a non-blocking wait4 that retries when interrupted.
func wait4(pid int, ws *syscall.WaitStatus) (int, error) {
	for {
		got, err := syscall.Wait4(pid, ws, syscall.WNOHANG, nil)
		if !errors.Is(err, syscall.EINTR) {
			return got, err
		}
	}
}

// deliver records the exit of p. mu is held.
func (r *Reaper) deliver(p *Process, ws syscall.WaitStatus) {
	delete(r.children, p.Pid)
	p.exit = exitFromWaitStatus(ws)
	close(p.done)
}

// Process is a child started through a Reaper.
type Process struct {
	Pid int

	r    *Reaper
	done chan struct{}
	exit Exit // set before done is closed
}

// Done is closed when the process has ended and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit is how the process ended; valid once Done is closed.
func (p *Process) Exit() Exit {
	<-p.done
	return p.exit
}

// errFinished is returned when signaling a process that has already been reaped.
var errFinished = errors.New("the process has already exited")

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.kill(p.Pid, sig) }

// SignalGroup sends sig to the process's whole process group (it leads its own group).
func (p *Process) SignalGroup(sig syscall.Signal) error { return p.kill(-p.Pid, sig) }

func (p *Process) kill(target int, sig syscall.Signal) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	select {
	case <-p.done:
		return errFinished
	default:
	}
	return syscall.Kill(target, sig)
}

// procSpec is what to start.
type procSpec struct {
	path  string // resolved executable
	args  []string
	env   []string
	dir   string
	files []uintptr // stdin, stdout, stderr
}

// start forks and execs spec in its own process group and registers it before any reap
// can see it exit.
func (r *Reaper) start(spec procSpec) (*Process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.quit:
		return nil, errors.New("the reaper is closed")
	default:
	}
	pid, err := syscall.ForkExec(spec.path, spec.args, &syscall.ProcAttr{
		Dir:   spec.dir,
		Env:   spec.env,
		Files: spec.files,
		Sys:   childSysProcAttr(),
	})
	if err != nil {
		return nil, err
	}
	p := &Process{Pid: pid, r: r, done: make(chan struct{})}
	r.children[pid] = p
	return p, nil
}
