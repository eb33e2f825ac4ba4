//go:build linux

package drain

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/netrig"
	"github.com/drainproxy/drainproxy/listener"
)

// TestReadTCPInfoThroughWrappers: the idle window needs the RTT of connections as
// http.Server sees them: plain, wrapped by max_connections' limit listener, or TLS.
func TestReadTCPInfoThroughWrappers(t *testing.T) {
	limited, err := listener.Listen(context.Background(), "127.0.0.1:0", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer limited.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := limited.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", limited.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	for name, conn := range map[string]net.Conn{
		"plain":         c,
		"limited":       sc,
		"TLS (limited)": tls.Server(sc, &tls.Config{}),
	} {
		if info := readTCPInfo(conn); !info.ok || info.rtt <= 0 {
			t.Errorf("%s (%T): TCP_INFO %+v, want the connection's RTT", name, conn, info)
		}
	}
}

// TestIdleWindowWaitsForALateResponse: the last response before the drain is lost on
// the link twice and reaches the client only after two retransmissions, later than the
// idle window plus its margin counted from our write; the client sends its next request
// the moment it has the response. The window must count from the response's arrival
// (its acknowledgement), not from our write, or the close crosses that request. Found
// in the 1%-loss matrix (a response retransmitted three times, then the crossing
// request reset).
func TestIdleWindowWaitsForALateResponse(t *testing.T) {
	const window = 300 * time.Millisecond
	d := New(Options{IdleClose: window, Grace: 30 * time.Second})
	var arm atomic.Bool
	var dropped atomic.Int32
	rig := netrig.New(t, netrig.Options{RTT: 50 * time.Millisecond, Drop: func(p []byte) bool {
		seg, ok := netrig.TCPSegment(p)
		if !ok || !arm.Load() || seg.Src.Addr().String() != netrig.ServerIP || seg.Payload == 0 {
			return false
		}
		if dropped.Add(1) == 1 {
			go d.Drain("test") // the response is written, without Connection: close
		}
		return dropped.Load() <= 3
	}})
	c, br := rigClient(t, d, rig)
	arm.Store(true)
	start := time.Now()
	if _, err := get(t, c, br); err != nil {
		t.Fatal(err)
	}
	late := time.Since(start)
	resp, err := get(t, c, br)
	if err != nil {
		t.Fatalf("request sent the moment the late response (%v) arrived: %v; want it answered (the idle window counted from our write, not the response's arrival)", late.Round(time.Millisecond), err)
	}
	if !resp.Close {
		t.Error("response during the drain lacks Connection: close")
	}
	if late < window+100*time.Millisecond {
		t.Errorf("the response took %v; the test needs it later than the window (%v) and its margin", late, window)
	}
}

// TestIdleWindowAfterARetransmittedHandshake: a client whose SYN-ACK was lost (its
// handshake took a second retry) resends a lost request only after its fallback
// timeout, about 3 s, far past the idle window plus an ordinary margin. The client sends
// a request within the window after the drain began; the link drops it once. The
// connection must still be open when the retransmission arrives.
func TestIdleWindowAfterARetransmittedHandshake(t *testing.T) {
	const window = 300 * time.Millisecond
	d := New(Options{IdleClose: window, Grace: 30 * time.Second})
	var synAcks, requests atomic.Int32
	var armed atomic.Bool
	rig := netrig.New(t, netrig.Options{RTT: 50 * time.Millisecond, Drop: func(p []byte) bool {
		seg, ok := netrig.TCPSegment(p)
		if !ok {
			return false
		}
		if seg.Flags&0x12 == 0x12 { // SYN-ACK: lose the first
			return synAcks.Add(1) == 1
		}
		if armed.Load() && seg.Src.Addr().String() == netrig.ClientIP && seg.Payload > 0 {
			return requests.Add(1) == 1 // lose the request's first transmission
		}
		return false
	}})
	c, br := rigClient(t, d, rig)
	d.Drain("test")
	time.Sleep(window / 2) // a client well inside the window
	armed.Store(true)
	start := time.Now()
	resp, err := get(t, c, br)
	if err != nil {
		t.Fatalf("request sent inside the idle window, its first transmission lost: %v after %v; want it answered (a client whose handshake was retransmitted resends late)", err, time.Since(start).Round(time.Millisecond))
	}
	if !resp.Close {
		t.Error("response during the drain lacks Connection: close")
	}
	t.Logf("the request, resent by the client, was answered %v after it was first sent", time.Since(start).Round(time.Millisecond))
}

// rigClient serves d (an "ok" handler) on rig's server side and returns a keep-alive
// connection from the client side that has had one answer.
func rigClient(t *testing.T, d *Drainer, rig *netrig.Rig) (net.Conn, *bufio.Reader) {
	t.Helper()
	ln, err := rig.Listen(rig.Server, netrig.ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	d.Add("test", testServer(d.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))), ln)
	done := make(chan Summary, 1)
	go func() { done <- d.Run(context.Background()) }()
	t.Cleanup(func() { d.Force("test over"); <-done })
	waitUntil(t, d.Ready)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rig.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	if _, err := get(t, c, br); err != nil {
		t.Fatal(err)
	}
	return c, br
}
