package drain

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Group runs the background workers (access log, flushing) that must finish before the
// process exits. It is the classic pattern: Go adds to a WaitGroup and runs the worker in a
// goroutine that recovers and logs a panic; Wait waits for all of them, but only so long.
//
// Each worker gets a context that is canceled when the drain reaches its flush step: from
// then on no more work arrives, and the worker should finish what it holds and return.
type Group struct {
	log    hclog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running map[string]int // worker name -> how many with that name are running
	panics  int
}

// NewGroup returns an empty group whose workers log through log.
func NewGroup(log hclog.Logger) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{log: log, ctx: ctx, cancel: cancel, running: map[string]int{}}
}

// Go runs fn in its own goroutine as the worker called name. A panic in fn is recovered,
// logged with its stack, and ends only that worker.
func (g *Group) Go(name string, fn func(ctx context.Context)) {
	g.mu.Lock()
	g.running[name]++
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer g.finished(name)
		defer func() {
			if v := recover(); v != nil {
				g.mu.Lock()
				g.panics++
				g.mu.Unlock()
				g.log.Error("background worker panicked", "worker", name,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}()
		fn(g.ctx)
	}()
}

func (g *Group) finished(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running[name]--; g.running[name] == 0 {
		delete(g.running, name)
	}
}

// Wait tells the workers to finish (cancels their context) and waits for them for at most
// timeout. It returns the names of the workers still running when it gave up, sorted.
func (g *Group) Wait(timeout time.Duration) (unfinished []string) {
	g.cancel()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for name := range g.running {
		unfinished = append(unfinished, name)
	}
	sort.Strings(unfinished)
	return unfinished
}

// Panics is how many workers have panicked so far.
func (g *Group) Panics() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.panics
}
