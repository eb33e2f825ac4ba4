// Package sigtrap turns signals into calls. Every signal drainproxy handles (drain, force,
// log reopening, reload, upgrade) goes through Handle, so each gets the same care: a
// buffered channel (an unbuffered one can miss a signal that arrives while the last is
// handled), one goroutine that calls the handler in arrival order, a stop that waits for
// it, and one delivery counted once.
//
// One delivery, counted once: tools that stop a process often signal it twice at the same
// moment, once through its process group and once directly (timeout(1) does this; so does
// a shell script that kills a job and then its leader). Counted as two, a second SIGTERM
// would force the drain that the first one began. So the same signal arriving again less
// than Coalesce after the last one that counted is dropped. Coalesce is far shorter than
// a human's second Ctrl-C: pressing a key twice on purpose takes 150 ms or more, and
// someone who means "stop now" presses again after seeing the first one work.
package sigtrap

import (
	"os"
	"os/signal"
	"time"
)

// Coalesce is how close together two deliveries of the same signal count as one.
const Coalesce = 100 * time.Millisecond

// Handle calls fn for each of sigs that the process receives, one at a time, on a
// goroutine of its own; the same signal arriving again within Coalesce of the last one
// that counted is dropped (arrival times are taken as signals come in, not when fn gets
// to them, so a slow fn does not turn one double delivery into two calls). stop undoes
// the trap, so the signals get their default effect again, and returns once fn is no
// longer running.
func Handle(fn func(os.Signal), sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	calls := make(chan os.Signal, 16)
	quit, read, called := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(read)
		coalesce(ch, calls, quit, time.Now)
	}()
	go func() {
		defer close(called)
		for s := range calls {
			fn(s)
		}
	}()
	return func() {
		signal.Stop(ch)
		close(quit)
		<-read
		close(calls)
		<-called
	}
}

// coalesce forwards each signal read from in to out until quit is closed, except one that
// arrives within Coalesce of the last forwarded delivery of the same signal (times from
// now). When out is full, which takes a flood of distinct signals, the signal is dropped
// rather than holding up the reading.
func coalesce(in <-chan os.Signal, out chan<- os.Signal, quit <-chan struct{}, now func() time.Time) {
	last := map[os.Signal]time.Time{}
	for {
		select {
		case s := <-in:
			t := now()
			if prev, ok := last[s]; ok && t.Sub(prev) < Coalesce {
				continue
			}
			last[s] = t
			select {
			case out <- s:
			default:
			}
		case <-quit:
			return
		}
	}
}
