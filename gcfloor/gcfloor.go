// Package gcfloor keeps Go's garbage collector from collecting a small heap over and over.
//
// With the default GOGC=100 the collector runs each time the heap doubles. A proxy keeps
// little alive (a few MB at tens of connections) but allocates a few KB per request, so at
// tens of thousands of requests a second it would collect dozens of times a second, each
// cycle with fixed costs (stack scans, write barriers, assists). A floor lets the heap grow
// to at least that many bytes before a collection: after each cycle the GC percent is
// raised just enough for the next goal to reach the floor, and set back to the base once
// the live heap alone is large enough.
//
// The floor applies only while the program allocates fast (16 MB/s): a lightly loaded
// sidecar collects rarely anyway, and keeps the small heap of Go's own pacing.
//
// The floor gives way to the memory limit (GOMEMLIMIT, or debug.SetMemoryLimit): it never
// raises the heap goal above half of the limit, so that the other half is left for what the
// heap goal does not count (goroutine stacks, memory the runtime has not yet returned,
// fragmentation) and for a burst of live memory. In a container whose limit is small, the
// floor shrinks; the collector then runs more often instead of the process being killed.
//
// It changes a process-wide setting, so only the program's main path should start it.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// busyRate is the allocation rate, in bytes a second between two collections, from which
// the floor applies; below idleRate it stops applying. The gap keeps a rate near the line
// from switching the floor on and off every cycle. Under busyRate, Go's pacing collects a
// few times a second at most, which costs next to nothing.
const (
	busyRate = 16 << 20
	idleRate = 4 << 20

	rateWindow = 100 * time.Millisecond
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales with the percent
// (a goal is never below heapMinimum*percent/100). So floor*100/heapMinimum is the most the
// percent needs to be, however small the live heap.
const heapMinimum = 4 << 20

// Floor adjusts the GC percent after every collection until Stop.
type Floor struct {
	floor   uint64
	base    int // the GC percent in force when Start was called
	samples []metrics.Sample
	percent atomic.Int64 // the percent set now
	stopped atomic.Bool
	setMu   sync.Mutex // orders a last adjustment against Stop's restore

	// Only adjust touches these, on the finalizer goroutine (and once in Start).
	busy       bool // allocating at busyRate or more: the floor applies
	lastAllocs uint64
	lastTime   time.Time
}

// The runtime metrics read after each cycle. Go's heap goal is
// live + (live + stacks + globals) * GOGC / 100, and at least heapMinimum * GOGC / 100.
var sampleNames = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes",
	"/gc/heap/allocs:bytes", "/gc/gomemlimit:bytes"}

// Start keeps the heap goal at floor bytes at least, on top of the GC percent in force (100
// unless GOGC or debug.SetGCPercent said otherwise). It does nothing (nil) for a floor of 0
// or when the collector is off (GOGC=off).
func Start(floor uint64) *Floor {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if floor == 0 || base < 0 {
		return nil
	}
	f := &Floor{floor: floor, base: base, samples: make([]metrics.Sample, len(sampleNames))}
	for i, name := range sampleNames {
		f.samples[i].Name = name
	}
	f.percent.Store(int64(base))
	f.adjust()
	f.arm()
	return f
}

// Stop ends the adjustments and puts the base GC percent back.
func (f *Floor) Stop() {
	if f == nil || f.stopped.Swap(true) {
		return
	}
	f.setMu.Lock()
	defer f.setMu.Unlock()
	debug.SetGCPercent(f.base)
	f.percent.Store(int64(f.base))
}

// sentinel is garbage from birth: its finalizer runs after the next collection. It holds a
// pointer so that the runtime gives it an allocation of its own (the tiny allocator batches
// pointer-free objects, whose finalizers would then run late).
type sentinel struct{ f *Floor }

// arm asks to run adjust after the next collection.
func (f *Floor) arm() {
	runtime.SetFinalizer(&sentinel{f: f}, func(s *sentinel) {
		if s.f.stopped.Load() {
			return
		}
		s.f.adjust()
		s.f.arm()
	})
}

// adjust sets the GC percent for the next cycle from what the last one found alive and
// how fast the program allocated since the one before.
func (f *Floor) adjust() {
	now := time.Now()
	metrics.Read(f.samples)
	live, stacks, globals := f.samples[0].Value.Uint64(), f.samples[1].Value.Uint64(), f.samples[2].Value.Uint64()
	allocs, limit := f.samples[3].Value.Uint64(), f.samples[4].Value.Uint64()
	// The rate is taken over rateWindow at least: cycles close together (a forced GC right
	// after another) say little about it.
	if elapsed := now.Sub(f.lastTime); f.lastTime.IsZero() || elapsed >= rateWindow {
		if !f.lastTime.IsZero() {
			f.busy = nextBusy(f.busy, allocs-f.lastAllocs, elapsed)
		}
		f.lastAllocs, f.lastTime = allocs, now
	}
	p := f.base
	if f.busy {
		p = percentFor(floorUnder(f.floor, limit), f.base, live, stacks+globals)
	}
	f.setMu.Lock()
	defer f.setMu.Unlock()
	if int64(p) == f.percent.Load() || f.stopped.Load() {
		return
	}
	debug.SetGCPercent(p)
	f.percent.Store(int64(p))
}

// nextBusy says whether the floor applies after a cycle that saw allocated bytes in elapsed.
func nextBusy(busy bool, allocated uint64, elapsed time.Duration) bool {
	if elapsed <= 0 {
		return busy
	}
	rate := float64(allocated) / elapsed.Seconds()
	if busy {
		return rate >= idleRate
	}
	return rate >= busyRate
}

// floorUnder is the floor that a memory limit of limit bytes leaves: at most half of it.
// With no limit set the runtime reports math.MaxInt64, which leaves any floor as it is.
func floorUnder(floor, limit uint64) uint64 {
	return min(floor, limit/2)
}

// percentFor is the smallest GC percent, not below base, whose heap goal reaches floor.
func percentFor(floor uint64, base int, live, roots uint64) int {
	if live >= floor {
		return base
	}
	scan := max(live+roots, 1)
	p := min(((floor-live)*100+scan-1)/scan, (floor*100+heapMinimum-1)/heapMinimum) // rounded up
	return max(base, int(p))
}
