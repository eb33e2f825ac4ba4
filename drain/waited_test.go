package drain

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// Waited closes when the wait for in-flight requests is over (PhaseStopped), not when the
// drain begins, and before the app is stopped: a preStop hook that waits on it must see
// the last request finish, and the app still running.
func TestWaitedAfterTheLastRequestBeforeTheApp(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	waitedAtStop := make(chan bool, 1)
	var d *Drainer
	d = New(Options{StopApp: func(context.Context) error {
		waitedAtStop <- Closed(d.Waited())
		return nil
	}})
	addr, done := serve(t, d, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	}))
	waitUntil(t, d.Ready)
	resp := make(chan error, 1)
	go func() {
		r, err := http.Get("http://" + addr)
		if err == nil {
			r.Body.Close()
		}
		resp <- err
	}()
	<-entered
	d.Drain("test")
	select {
	case <-d.Waited():
		t.Fatal("Waited closed while a request was in flight")
	case <-time.After(100 * time.Millisecond): // a window for the bug to show, not a readiness wait
	}
	close(release)
	<-d.Waited()
	if d.Phase() != PhaseStopped {
		t.Errorf("Waited closed in phase %s, want stopped", d.Phase())
	}
	if err := <-resp; err != nil {
		t.Errorf("the request in flight failed: %v", err)
	}
	if !<-waitedAtStop {
		t.Error("the app was stopped before Waited closed")
	}
	<-done
}
