package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name             string
		floor            uint64
		base             int
		live, roots      uint64
		wantMin, wantMax int
	}{
		{"live heap above the floor keeps the base", 32 * mib, 100, 40 * mib, mib, 100, 100},
		{"live heap at the floor keeps the base", 32 * mib, 100, 32 * mib, 0, 100, 100},
		{"small heap: goal reaches the floor", 32 * mib, 100, 4 * mib, 0, 700, 800},
		{"roots count in the goal", 32 * mib, 100, 4 * mib, 4 * mib, 350, 400},
		{"never below the base", 32 * mib, 300, 16 * mib, 0, 300, 300},
		{"an empty heap: the runtime's minimum goal reaches the floor", 32 * mib, 100, 0, 0, 800, 800},
		{"a small heap: the minimum goal reaches it first", 32 * mib, 100, mib, 0, 800, 800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := percentFor(tc.floor, tc.base, tc.live, tc.roots)
			if got < tc.wantMin || got > tc.wantMax {
				t.Fatalf("percentFor(%d, %d, %d, %d) = %d, want %d..%d", tc.floor, tc.base, tc.live, tc.roots, got, tc.wantMin, tc.wantMax)
			}
			goal := max(tc.live+(tc.live+tc.roots)*uint64(got)/100, heapMinimum*uint64(got)/100)
			if got != tc.base && goal < tc.floor {
				t.Fatalf("percent %d gives a goal of %d, below the floor %d", got, goal, tc.floor)
			}
		})
	}
}

var sink []byte

// collections counts the GC cycles while about 256 MiB of short-lived garbage is allocated.
func collections() uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 256 << 10 {
		sink = make([]byte, 1024)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

// TestFloorCutsCollections runs the real collector: with a 64 MiB floor, a small live heap
// allocated from at hundreds of MB a second must be collected several times less often
// than with the plain GC percent.
func TestFloorCutsCollections(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	plain := collections()

	f := Start(64 << 20)
	if f == nil {
		t.Fatal("Start returned nil for a 64 MiB floor")
	}
	// The floor applies once the rate was seen over a window: allocate until it does.
	for deadline := time.Now().Add(10 * time.Second); int(f.percent.Load()) <= 100; {
		if time.Now().After(deadline) {
			t.Fatalf("percent still %d after 10 s of allocating fast with a small live heap", int(f.percent.Load()))
		}
		collections()
	}
	floored := collections()
	percent := int(f.percent.Load())
	f.Stop()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("after Stop the GC percent is %d, want the base 100 back", got)
	}
	t.Logf("collections for 256 MiB of garbage: %d plain, %d with a 64 MiB floor (percent %d)", plain, floored, percent)
	// A goal near 64 MiB collects about every 60 MiB: at least twice, far less than plain.
	if floored < 2 || floored*3 > plain {
		t.Fatalf("with a 64 MiB floor: %d collections, plain: %d; want 2 or more, and at most a third of plain", floored, plain)
	}
}

// TestIdleKeepsGoPacing: a program that allocates little keeps the base percent, so its heap
// stays as small as Go's pacing makes it.
func TestIdleKeepsGoPacing(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	f := Start(64 << 20)
	defer f.Stop()
	for range 5 {
		sink = make([]byte, 1024)
		time.Sleep(20 * time.Millisecond) // a few KB over 20 ms: far under idleRate
		runtime.GC()
		runtime.GC() // the first cycle queues the finalizer; by the second it has run
	}
	if p := int(f.percent.Load()); p != 100 {
		t.Fatalf("percent of an idle program = %d, want the base 100", p)
	}
}

func TestNextBusy(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		busy      bool
		allocated uint64
		elapsed   time.Duration
		want      bool
	}{
		{false, busyRate, s, true},             // reaches the busy rate
		{false, busyRate - 1, s, false},        // just under it
		{false, idleRate * 2, s, false},        // between the two rates: stays idle
		{true, idleRate * 2, s, true},          // between the two rates: stays busy
		{true, idleRate - 1, s, false},         // under the idle rate
		{true, 1 << 30, 2 * time.Minute, true}, // 8.5 MB/s over a long cycle
		{true, 0, 0, true},                     // no time passed: no change
	} {
		if got := nextBusy(tc.busy, tc.allocated, tc.elapsed); got != tc.want {
			t.Errorf("nextBusy(%v, %d, %v) = %v, want %v", tc.busy, tc.allocated, tc.elapsed, got, tc.want)
		}
	}
}

func TestStartOff(t *testing.T) {
	if f := Start(0); f != nil {
		t.Fatal("Start(0) should do nothing")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	if f := Start(64 << 20); f != nil {
		t.Fatal("Start with the collector off (GOGC=off) should do nothing")
	}
	var f *Floor
	f.Stop() // a nil Floor is a valid "off"
}

func TestFloorUnder(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		floor, limit, want uint64
	}{
		{32 * mib, math.MaxInt64, 32 * mib}, // no limit: the runtime reports MaxInt64
		{32 * mib, 256 * mib, 32 * mib},     // a roomy limit leaves the floor alone
		{32 * mib, 64 * mib, 32 * mib},      // exactly half
		{32 * mib, 57 * mib, 57 * mib / 2},  // a 64 MiB container at a 0.9 ratio
		{32 * mib, 0, 0},                    // a limit of 0: no floor at all
	} {
		if got := floorUnder(tc.floor, tc.limit); got != tc.want {
			t.Errorf("floorUnder(%d, %d) = %d, want %d", tc.floor, tc.limit, got, tc.want)
		}
	}
}

// TestFloorGivesWayToMemoryLimit runs the real collector under a memory limit below the
// floor: the floor must still apply, but never set a heap goal above half of the limit.
func TestFloorGivesWayToMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(48 * mib))
	runtime.GC()
	f := Start(64 << 20)
	if f == nil {
		t.Fatal("Start returned nil for a 64 MiB floor")
	}
	defer f.Stop()
	for deadline := time.Now().Add(10 * time.Second); int(f.percent.Load()) <= 100; {
		if time.Now().After(deadline) {
			t.Fatalf("percent still %d after 10 s of allocating fast under a 48 MiB limit: the floor should still apply, up to 24 MiB", int(f.percent.Load()))
		}
		collections()
	}
	collections() // a few more cycles at the floor
	p := uint64(f.percent.Load())
	// Whatever the live heap, the goal is at least heapMinimum*p/100.
	if minGoal := heapMinimum * p / 100; minGoal > 24*mib {
		t.Fatalf("under a 48 MiB memory limit the floor set GC percent %d: a heap goal of at least %d MiB, above half the limit (24 MiB)", p, minGoal/mib)
	}
	t.Logf("GC percent under a 48 MiB limit with a 64 MiB floor: %d", p)
}
