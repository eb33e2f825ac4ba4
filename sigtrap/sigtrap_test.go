package sigtrap

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// Real signals to this test process: each reaches the handler, in order, and after stop
// the handler is not called again.
func TestHandleDeliversRealSignalsUntilStopped(t *testing.T) {
	got := make(chan os.Signal, 8)
	stop := Handle(func(s os.Signal) { got <- s }, syscall.SIGUSR1, syscall.SIGUSR2)
	for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2} {
		if err := syscall.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-got:
			if r != s {
				t.Fatalf("handler got %v, want %v", r, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v never reached the handler", s)
		}
	}
	stop()
	// Keep SIGUSR1 from killing the test once the trap is gone: trap it elsewhere.
	other := Handle(func(os.Signal) {}, syscall.SIGUSR1)
	defer other()
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	time.Sleep(50 * time.Millisecond) // give a wrongly delivered signal the time to show
	select {
	case s := <-got:
		t.Fatalf("handler called with %v after stop", s)
	default:
	}
}

// The same signal twice in quick succession (a process-group signal plus a direct one, as
// timeout(1) sends) counts once; after Coalesce it counts again, and another signal is
// never swallowed by the first.
func TestCoalesceCountsADoubleDeliveryOnce(t *testing.T) {
	base := time.Unix(1000, 0)
	arrivals := []struct {
		sig os.Signal
		at  time.Duration
	}{
		{syscall.SIGTERM, 0},
		{syscall.SIGTERM, time.Millisecond},    // the same delivery through the process group
		{syscall.SIGHUP, 2 * time.Millisecond}, // another signal counts at once
		{syscall.SIGTERM, Coalesce - time.Millisecond},
		{syscall.SIGTERM, Coalesce + 5*time.Millisecond}, // a human's second Ctrl-C: counts
	}
	in, out, quit := make(chan os.Signal), make(chan os.Signal, 16), make(chan struct{})
	times := make(chan time.Time, len(arrivals)) // the clock: one reading per arrival
	done := make(chan struct{})
	go func() { defer close(done); coalesce(in, out, quit, func() time.Time { return <-times }) }()
	for _, a := range arrivals {
		times <- base.Add(a.at)
		in <- a.sig
	}
	close(quit)
	<-done
	close(out)
	var got []os.Signal
	for s := range out {
		got = append(got, s)
	}
	want := []os.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGTERM}
	if len(got) != len(want) {
		t.Fatalf("forwarded %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("forwarded %v, want %v", got, want)
		}
	}
}
