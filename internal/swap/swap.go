// Package swap is the one mechanism for what drainproxy replaces while it serves: the proxy
// on a configuration reload, the upstream backend on an app restart, the access log. The
// value in service counts its uses; a swap retires it, after which it takes no new use,
// and its Idle channel closes when the last use it had has ended. No lock is taken on the
// path of a use: acquiring is one atomic add, releasing another.
//
// A holder keeps the value in service behind an atomic pointer and acquires like this:
//
//	for {
//		v := cur.Load()
//		if v.gen.Acquire() {
//			return v // ... use v, then v.gen.Release()
//		}
//		// a swap retired v after the load; the value that replaced it is stored by now
//	}
package swap

import (
	"context"
	"sync"
	"sync/atomic"
)

// retired is set in Gen.state once the generation was retired; the bits below count uses.
const retired = int64(1) << 62

// Gen is one generation of a replaceable value: the count of its uses and whether it was
// retired, in one word, so that "count a use unless retired" is a single atomic add and
// exactly the release that leaves a retired generation unused sees it.
type Gen struct {
	state  atomic.Int64
	once   sync.Once
	idle   chan struct{}
	onIdle func()
}

// New returns a generation in service with no use. onIdle, if not nil, runs once, on the
// goroutine that leaves the generation retired and unused (a release, or Retire itself).
func New(onIdle func()) *Gen { return &Gen{idle: make(chan struct{}), onIdle: onIdle} }

// Acquire counts a use, unless g was retired: then it counts nothing and returns false,
// and the caller looks up the generation that replaced g.
func (g *Gen) Acquire() bool {
	if g.state.Add(1)&retired == 0 {
		return true
	}
	g.Release()
	return false
}

// Release ends a use that Acquire counted.
func (g *Gen) Release() {
	if g.state.Add(-1) == retired {
		g.markIdle()
	}
}

// Retire stops g from taking new uses. Idle closes once the uses it has end (at once, if
// it has none). Retiring twice is harmless.
func (g *Gen) Retire() {
	if g.state.Or(retired)&^retired == 0 {
		g.markIdle()
	}
}

func (g *Gen) markIdle() {
	g.once.Do(func() {
		close(g.idle)
		if g.onIdle != nil {
			g.onIdle()
		}
	})
}

// Idle is closed once g was retired and its last use has ended.
func (g *Gen) Idle() <-chan struct{} { return g.idle }

// IsIdle reports whether Idle is closed.
func (g *Gen) IsIdle() bool {
	select {
	case <-g.idle:
		return true
	default:
		return false
	}
}

// Inflight is how many uses g has now.
func (g *Gen) Inflight() int64 { return g.state.Load() &^ retired }

// Wait returns nil once g is idle, or ctx's error if ctx ends first. It wakes when the last
// use ends; it does not poll. On a generation still in service it waits for ctx.
func (g *Gen) Wait(ctx context.Context) error {
	select {
	case <-g.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
