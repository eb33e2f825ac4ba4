package swap

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A retired generation takes no new use, and Idle closes exactly when the last use it had
// ends; onIdle runs once.
func TestRetireWaitsForUses(t *testing.T) {
	var idles atomic.Int32
	g := New(func() { idles.Add(1) })
	for range 2 {
		if !g.Acquire() {
			t.Fatal("a generation in service refused a use")
		}
	}
	g.Retire()
	if g.Acquire() {
		t.Fatal("a retired generation took a new use")
	}
	if g.IsIdle() || g.Inflight() != 2 {
		t.Fatalf("idle %v with %d uses, want busy with 2", g.IsIdle(), g.Inflight())
	}
	g.Release()
	if g.IsIdle() {
		t.Fatal("idle with one use left")
	}
	g.Release()
	if !g.IsIdle() || idles.Load() != 1 {
		t.Fatalf("after the last release: idle %v, onIdle ran %d times; want idle, once", g.IsIdle(), idles.Load())
	}
	g.Retire()
	if idles.Load() != 1 {
		t.Fatalf("a second Retire ran onIdle again (%d)", idles.Load())
	}
}

// Retiring an unused generation makes it idle at once; Wait on one in service waits for ctx.
func TestRetireUnused(t *testing.T) {
	g := New(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx); err == nil {
		t.Fatal("Wait on a generation in service returned nil")
	}
	g.Retire()
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Under concurrent swaps no use lands on a generation after it went idle: the holder's
// acquire loop always ends on a generation that counts the use.
func TestConcurrentSwaps(t *testing.T) {
	type value struct {
		gen  *Gen
		dead atomic.Bool // set when the generation went idle
	}
	newValue := func() *value {
		v := &value{}
		v.gen = New(func() { v.dead.Store(true) })
		return v
	}
	var cur atomic.Pointer[value]
	cur.Store(newValue())
	acquire := func() *value {
		for {
			v := cur.Load()
			if v.gen.Acquire() {
				return v
			}
		}
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := acquire()
				if v.dead.Load() {
					bad.Add(1)
				}
				v.gen.Release()
			}
		})
	}
	var olds []*value
	for range 2000 {
		old := cur.Swap(newValue())
		old.gen.Retire()
		olds = append(olds, old)
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d uses landed on a generation already idle", bad.Load())
	}
	for i, old := range olds {
		if !old.gen.IsIdle() {
			t.Fatalf("retired generation %d never went idle (%d uses left)", i, old.gen.Inflight())
		}
	}
}
