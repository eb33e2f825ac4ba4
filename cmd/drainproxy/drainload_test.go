package main

import (
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDrainLoadRuns is issue 3's load run: 50 keep-alive clients sending continuously and
// 10 slow requests in flight at SIGTERM, with drain.delay = 0, repeated. Every run must lose
// nothing on an established connection. It also reports how long after the last response
// the process had exited (the drain wakes on the last close; it does not poll).
//
// DRAINPROXY_LOAD_RUNS sets the number of runs (default 3, enough for CI; the README's
// figures come from 30).
func TestDrainLoadRuns(t *testing.T) {
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("DRAINPROXY_LOAD_RUNS")); err == nil && v > 0 {
		runs = v
	}
	var latencies []time.Duration
	var answered, lost, refused int64
	for run := range runs {
		up, arrived := drainUpstream(t)
		p := startProxy(t, "-upstream", up, "-grace", "20s", "-log-level", "info")
		stop := make(chan struct{})
		var res loadResult
		clients := keepAliveClients(p.Addr, 50, "/", stop, &res)

		var slow sync.WaitGroup
		var slowFailed, slowLast atomicMax
		for range 10 {
			rc, err := dialRaw(p.Addr, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			slow.Add(1)
			go func() {
				defer slow.Done()
				defer rc.Close()
				resp, _, err := rc.do("POST", "/slow?d=1s")
				if err != nil || resp.StatusCode != 200 {
					slowFailed.add(1)
					return
				}
				slowLast.max(time.Now().UnixNano())
			}()
		}
		awaitArrivals(t, arrived, 10)
		waitFor(t, 5*time.Second, func() bool { return res.ok.Load() > 200 })

		p.Signal(syscall.SIGTERM)
		code := p.Wait(30 * time.Second)
		slow.Wait()
		close(stop)
		clients.Wait()

		last := max(slowLast.load(), res.lastResp.Load())
		latency := p.exitedAt.Sub(time.Unix(0, last))
		latencies = append(latencies, latency)
		answered += res.ok.Load()
		lost += res.lost.Load()
		refused += res.refused.Load()
		t.Logf("run %d: exit %d, answered %d, lost %d, refused new %d, slow failed %d, exit %v after the last response",
			run+1, code, res.ok.Load(), res.lost.Load(), res.refused.Load(), slowFailed.load(), latency)
		if code != 0 || res.lost.Load() != 0 || res.bad.Load() != 0 || slowFailed.load() != 0 {
			t.Fatalf("run %d lost requests: exit %d, lost %d (first: %v), non-200 %d, slow failed %d",
				run+1, code, res.lost.Load(), res.firstErr.Load(), res.bad.Load(), slowFailed.load())
		}
	}
	slices.Sort(latencies)
	t.Logf("%d runs: answered %d, lost %d, new connections refused %d; exit after the last response: min %v, median %v, max %v",
		runs, answered, lost, refused, latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1])
}

// atomicMax is a small mutex-guarded int64 for the test's bookkeeping.
type atomicMax struct {
	mu sync.Mutex
	v  int64
}

func (a *atomicMax) add(d int64) { a.mu.Lock(); a.v += d; a.mu.Unlock() }
func (a *atomicMax) max(v int64) {
	a.mu.Lock()
	a.v = max(a.v, v)
	a.mu.Unlock()
}
func (a *atomicMax) load() int64 { a.mu.Lock(); defer a.mu.Unlock(); return a.v }
