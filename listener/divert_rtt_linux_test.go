//go:build linux

package listener

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/netrig"
)

// A client 60 ms away whose SYN reaches the sink before the first selection program has
// its handshake half done there when the stop first looks at the sink; its final ACK
// completes it in the sink afterwards. If it takes the sink's place before the plug, the
// kernel drops the plug's SYN: the stop takes the client out too and serves it, and the
// plug gets the place when it sends its SYN again. Every client is answered, nothing is
// unserved. Before, the client held the place to the end and was reset with the sink.
func TestReuseportDiversionRescuesAHandshakeThatEndsInTheSink(t *testing.T) {
	r := netrig.New(t, netrig.Options{RTT: 60 * time.Millisecond})
	var l *Listener
	if err := r.Do(r.Server, func() error {
		var err error
		l, err = Listen(context.Background(), netrig.ServerIP+":0", 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	useMethod(l, MethodReuseport)
	addr := l.Addr().String()
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
	}
	t.Cleanup(func() { srv.Close() })
	go srv.Serve(l)

	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	afterSinkListen = func(sink int) {
		// The SYNs spread over the listener and the sink by the port hash; each reaches
		// the server after 30 ms, and its final ACK 60 ms after that.
		for range clients {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := r.Dial(ctx, addr)
				if err == nil {
					defer c.Close()
					err = requestOn(c)
				}
				errs <- err
			})
		}
		time.Sleep(45 * time.Millisecond)
	}
	inSink := 0
	beforePlugConnect = func(sink int) {
		time.Sleep(75 * time.Millisecond) // the final ACKs arrive
		inSink, _ = sinkQueueLen(sink)
	}
	t.Cleanup(func() { afterSinkListen, beforePlugConnect = nil, nil })

	var left int
	var err error
	if derr := r.Do(r.Server, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		left, err = l.StopAccepting(ctx)
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	wg.Wait()
	close(errs)
	if method, why := l.StopMethod(); method != MethodReuseport {
		t.Fatalf("stop method %q (%s), want %q", method, why, MethodReuseport)
	}
	if inSink == 0 {
		t.Fatal("no client completed its handshake in the sink before the plug's connect (the port hash sent all 8 to the listener?)")
	}
	if err != nil || left != 0 {
		t.Errorf("StopAccepting = %d, %v; want 0, nil", left, err)
	}
	for err := range errs {
		if err != nil {
			t.Errorf("client: %v", err)
		}
	}
	if n := l.Unserved(); n != 0 {
		t.Errorf("Unserved = %d, want 0", n)
	}
}
