package drain

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

// autoDrainer serves d with a handler that answers "ok" and returns when the delay ended
// (the listeners began to stop), through the returned channel.
func autoDrainer(t *testing.T, opts Options) (*Drainer, string, <-chan time.Time, <-chan Summary) {
	t.Helper()
	d := New(opts)
	stopped := make(chan time.Time, 1)
	d.OnStopAccepting(func(context.Context) { stopped <- time.Now() })
	addr, done := serve(t, d, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	waitUntil(t, d.Ready)
	return d, addr, stopped, done
}

// A router that goes on opening new connections to us for a while after our readiness
// turned 503 (an endpoints controller and kube-proxy take a random time to notice): with
// drain.delay = "auto" nothing is lost, and the delay ends within quiet + 100 ms of the
// router's last new connection.
func TestAutoDelayEndsWhenTheRouterStops(t *testing.T) {
	const quiet = time.Second
	for round := range 2 {
		var out testlog.Buffer
		d, addr, stopped, done := autoDrainer(t, Options{DelayAuto: true, Quiet: quiet, DelayMax: 20 * time.Second,
			Logger: testLogger(&out)})
		lag := time.Second + rand.N(2*time.Second) // the propagation lag of this round
		d.Drain("test")
		begun := time.Now()
		var lost, served atomic.Int64
		var lastNew time.Time
		for time.Since(begun) < lag {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				lost.Add(1)
				break
			}
			lastNew = time.Now()
			go func() {
				defer c.Close()
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != 200 {
					lost.Add(1)
					return
				}
				served.Add(1)
			}()
			time.Sleep(rand.N(quiet / 4)) // dense traffic: gaps well below quiet
		}
		end := <-stopped
		sum := <-done
		if lost.Load() != 0 {
			t.Errorf("round %d: %d requests lost (%d served)", round, lost.Load(), served.Load())
		}
		if gap := end.Sub(lastNew); gap < quiet-50*time.Millisecond || gap > quiet+100*time.Millisecond {
			t.Errorf("round %d (lag %v): the delay ended %v after the last new connection; want within %v..%v",
				round, lag, gap, quiet, quiet+100*time.Millisecond)
		}
		if sum.ExitCode() != 0 {
			t.Errorf("round %d: summary %+v", round, sum)
		}
		if logs := out.String(); !strings.Contains(logs, `drain delay over:`) || !strings.Contains(logs, "why=\"no new connection for drain.quiet\"") {
			t.Errorf("round %d: the log does not say why the delay ended:\n%s", round, logs)
		}
	}
}

// The delay never ends before delay_min, and ends at delay_max if new connections keep
// coming.
func TestAutoDelayBounds(t *testing.T) {
	t.Run("min", func(t *testing.T) {
		d, _, stopped, done := autoDrainer(t, Options{DelayAuto: true, Quiet: 100 * time.Millisecond,
			DelayMin: 700 * time.Millisecond, DelayMax: 5 * time.Second})
		d.Drain("test")
		begun := time.Now()
		if took := (<-stopped).Sub(begun); took < 700*time.Millisecond || took > 2*time.Second {
			t.Errorf("nobody connected: the delay took %v; want delay_min (700ms)", took)
		}
		<-done
	})
	t.Run("max", func(t *testing.T) {
		d, addr, stopped, done := autoDrainer(t, Options{DelayAuto: true, Quiet: 300 * time.Millisecond,
			DelayMax: time.Second})
		d.Drain("test")
		begun := time.Now()
		stop := make(chan struct{})
		go func() { // a new connection every 50 ms, until the listener closes or 3 s pass
			for time.Since(begun) < 3*time.Second {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		end := <-stopped
		close(stop)
		if took := end.Sub(begun); took < time.Second || took > 2*time.Second {
			t.Errorf("connections kept coming: the delay took %v; want delay_max (1s)", took)
		}
		<-done
	})
}
