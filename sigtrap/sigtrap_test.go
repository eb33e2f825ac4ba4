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
