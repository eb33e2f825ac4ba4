// Package sigtrap turns signals into calls. Every signal drainproxy handles (drain, force,
// log reopening, reload) goes through Handle, so each gets the same care: a buffered
// channel (an unbuffered one can miss a signal that arrives while the last is handled),
// one goroutine that calls the handler in arrival order, and a stop that waits for it.
package sigtrap

import (
	"os"
	"os/signal"
)

// Handle calls fn for each of sigs that the process receives, one at a time, on a
// goroutine of its own. stop undoes the trap, so the signals get their default effect
// again, and returns once fn is no longer running.
func Handle(fn func(os.Signal), sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case s := <-ch:
				fn(s)
			case <-quit:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(quit)
		<-exited
	}
}
