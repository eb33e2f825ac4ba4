//go:build linux

package listener

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/bpf"
)

// loopbacks are the hosts the socket tests run on, as subtests.
var loopbacks = []string{"127.0.0.1", "[::1]"}

// newListener binds host:0 and closes it at the end of the test. It skips
// the test when host cannot be bound (for example ::1 on a host without IPv6).
func newListener(t *testing.T, host string, maxConns int) *Listener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := Listen(ctx, host+":0", maxConns)
	if err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) {
			t.Skipf("cannot bind %s here: %v", host, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func queueLen(t *testing.T, l *Listener) int {
	t.Helper()
	rc, err := l.tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n, err := acceptQueueLen(rc)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitQueue waits until the kernel's accept queue holds exactly n connections.
func waitQueue(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := queueLen(t, l)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("accept queue holds %d connections, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg from a to b and checks that b reads it.
func exchange(t *testing.T, a, b net.Conn, msg string) {
	t.Helper()
	if _, err := a.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != msg {
		t.Fatalf("read %q, %v; want %q", buf, err, msg)
	}
}

func acceptWithin(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	if err := l.tcp.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	l.tcp.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSYNDropProgram runs the filter in x/net/bpf's VM on TCP headers with
// each combination of flags that matters.
func TestSYNDropProgram(t *testing.T) {
	vm, err := bpf.NewVM(synDropProgram())
	if err != nil {
		t.Fatal(err)
	}
	const (
		fin, syn, rst, psh, ack, ece, cwr = 0x01, 0x02, 0x04, 0x08, 0x10, 0x40, 0x80
	)
	for _, tc := range []struct {
		name  string
		flags byte
		pass  bool
	}{
		{"SYN", syn, false},
		{"SYN with ECN (ECE|CWR)", syn | ece | cwr, false},
		{"SYN-ACK", syn | ack, true},
		{"final ACK of a handshake", ack, true},
		{"ACK with data", ack | psh, true},
		{"FIN-ACK", fin | ack, true},
		{"RST", rst, true},
	} {
		hdr := make([]byte, 20) // a TCP header without options
		hdr[12] = 5 << 4        // data offset: 5 words
		hdr[13] = tc.flags
		n, err := vm.Run(hdr)
		if err != nil {
			t.Fatal(err)
		}
		if pass := n > 0; pass != tc.pass {
			t.Errorf("%s (flags %#02x): pass=%v, want %v", tc.name, tc.flags, pass, tc.pass)
		}
	}
}

// Test 1: with the filter on, a new dial is not completed by the kernel,
// while an established connection and one that was queued before the filter
// still work.
func TestSYNFilterBlocksNewConnections(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			l := newListener(t, host, 0)
			addr := l.Addr().String()

			client := dial(t, addr)
			server := acceptWithin(t, l)
			queued := dial(t, addr) // handshake complete, not accepted yet
			waitQueue(t, l, 1)

			rc, err := l.tcp.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if err := attachSYNFilter(rc); err != nil {
				t.Fatal(err)
			}

			c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
			if err == nil {
				c.Close()
				t.Fatalf("dial %s with the SYN filter on: connected, want a timeout", addr)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("dial %s with the SYN filter on: %v, want a timeout", addr, err)
			}
			if n := queueLen(t, l); n != 1 {
				t.Fatalf("accept queue holds %d after the blocked dial, want 1", n)
			}

			exchange(t, client, server, "ping")
			exchange(t, server, client, "pong")

			queuedServer := acceptWithin(t, l)
			exchange(t, queued, queuedServer, "hello")
			exchange(t, queuedServer, queued, "world")
		})
	}
}

const clients = 50

// fillQueue opens n connections, writes a complete HTTP request on each, and
// waits until all n sit in the kernel's accept queue. Nothing accepts them.
func fillQueue(t *testing.T, l *Listener, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, l.Addr().String())
		req := fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: drainproxy.test\r\nConnection: close\r\n\r\n", i)
		if _, err := io.WriteString(conns[i], req); err != nil {
			t.Fatal(err)
		}
	}
	waitQueue(t, l, n)
	return conns
}

// Test 2, the key one: 50 connections with a request each wait in the accept
// queue; StopAccepting runs while a Serve loop starts accepting; every one of
// them must get its answer.
//
// In "concurrent" the Serve loop starts at the same time as StopAccepting; in
// "serve-late" it starts 20ms later, so the drain is certainly waiting with
// the filter on and a full queue when accepting begins.
//
// Each runs with the SYN filter and without it (MethodShutdown, as in a container
// without CAP_NET_ADMIN).
func TestStopAcceptingLosesNoQueuedConnection(t *testing.T) {
	for _, method := range stopMethods {
		for _, host := range loopbacks {
			for _, serveDelay := range []time.Duration{0, 20 * time.Millisecond} {
				name := method + "/" + host + "/concurrent"
				if serveDelay > 0 {
					name = method + "/" + host + "/serve-late"
				}
				t.Run(name, func(t *testing.T) { testDrainQueue(t, host, serveDelay, method) })
			}
		}
	}
}

func testDrainQueue(t *testing.T, host string, serveDelay time.Duration, method string) {
	l := newListener(t, host, 0)
	useMethod(l, method)
	conns := fillQueue(t, l, clients)

	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "answer "+r.URL.Path)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		left int
		err  error
	}
	stopped := make(chan result, 1)
	served := make(chan error, 1)
	go func() {
		left, err := l.StopAccepting(ctx)
		stopped <- result{left, err}
	}()
	go func() {
		time.Sleep(serveDelay)
		served <- srv.Serve(l)
	}()

	var lost []string
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			lost = append(lost, fmt.Sprintf("client %d: %v", i, err))
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("answer /%d", i); err != nil || string(body) != want {
			lost = append(lost, fmt.Sprintf("client %d: body %q, %v; want %q", i, body, err, want))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d queued connections lost their answer:\n%v", len(lost), clients, lost)
	}

	res := <-stopped
	if res.left != 0 || res.err != nil {
		t.Fatalf("StopAccepting = %d, %v; want 0, nil", res.left, res.err)
	}
	if got, why := l.StopMethod(); got != method {
		t.Errorf("StopMethod = %q (%s), want %q", got, why, method)
	}
	if n := l.Unserved(); n != 0 {
		t.Errorf("Unserved = %d, want 0", n)
	}
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v, want an error wrapping net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after StopAccepting closed the listener")
	}
	assertRefused(t, l.Addr().String())
}

// TestPlainCloseResetsQueuedConnections is the contrast to the key test: the
// same 50 queued requests, closed with a plain Close, are reset by this
// kernel. It shows the problem StopAccepting solves is real here.
func TestPlainCloseResetsQueuedConnections(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			l := newListener(t, host, 0)
			conns := fillQueue(t, l, clients)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			reset, eof := 0, 0
			for _, c := range conns {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err := c.Read(make([]byte, 1))
				switch {
				case errors.Is(err, syscall.ECONNRESET):
					reset++
				case errors.Is(err, io.EOF):
					eof++
				}
			}
			t.Logf("plain Close: of %d queued connections with a request, %d reset (ECONNRESET), %d closed unanswered (EOF)", clients, reset, eof)
			if reset+eof == 0 {
				t.Fatal("no queued connection was reset by a plain Close; the contrast did not show")
			}
		})
	}
}

func assertRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s after StopAccepting: connected, want refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s after StopAccepting: %v, want connection refused", addr, err)
	}
}

// Test 3: with nothing accepting, ctx ends the wait; StopAccepting reports
// the connections left and the listener is closed.
func TestStopAcceptingContextExpiry(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			l := newListener(t, host, 0)
			fillQueue(t, l, 3)

			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			left, err := l.StopAccepting(ctx)
			if left != 3 {
				t.Errorf("leftInQueue = %d, want 3", left)
			}
			if n := l.Unserved(); n != 3 {
				t.Errorf("Unserved = %d, want 3: the queued connections were reset", n)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want one wrapping context.DeadlineExceeded", err)
			}
			t.Log(err)
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept after StopAccepting: %v, want net.ErrClosed", err)
			}
			assertRefused(t, l.Addr().String())

			if left, err := l.StopAccepting(context.Background()); left != 0 || err != nil {
				t.Errorf("second StopAccepting = %d, %v; want 0, nil", left, err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close after StopAccepting: %v, want nil", err)
			}
		})
	}
}

// With the maxConns limit reached Accept blocks, the queue never empties, and
// ctx is what ends StopAccepting.
func TestStopAcceptingLimitReached(t *testing.T) {
	l := newListener(t, "127.0.0.1", 1)
	addr := l.Addr().String()
	client := dial(t, addr)
	held := acceptWithin(t, l) // the one slot, kept busy

	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil { // blocks on the limit
			accepted <- c
		}
	}()
	dial(t, addr)
	waitQueue(t, l, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	left, err := l.StopAccepting(ctx)
	if left != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StopAccepting with the limit reached = %d, %v; want 1 and a deadline error", left, err)
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("a connection beyond maxConns was accepted")
	default:
	}
	// The connection accepted before the drain is untouched.
	exchange(t, client, held, "still here")
}

func TestStopAcceptingAfterClose(t *testing.T) {
	l := newListener(t, "127.0.0.1", 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StopAccepting(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("StopAccepting after Close: %v, want net.ErrClosed", err)
	}
}

// Test 5: the (maxConns+1)th connection is not accepted while maxConns are
// open, and is accepted as soon as one of them closes.
func TestMaxConns(t *testing.T) {
	const maxConns = 2
	l := newListener(t, "127.0.0.1", maxConns)
	addr := l.Addr().String()

	accepted := make(chan net.Conn, maxConns+1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	})

	for range maxConns + 1 {
		dial(t, addr)
	}
	var open []net.Conn
	for range maxConns {
		select {
		case c := <-accepted:
			open = append(open, c)
		case <-time.After(2 * time.Second):
			t.Fatalf("only %d of the first %d connections were accepted", len(open), maxConns)
		}
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Fatalf("connection %d was accepted while %d were open", maxConns+1, maxConns)
	case <-time.After(300 * time.Millisecond):
	}
	waitQueue(t, l, 1) // it waits in the kernel's accept queue

	open[0].Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("connection beyond the limit not accepted after a slot freed")
	}
	for _, c := range open[1:] {
		c.Close()
	}
}
