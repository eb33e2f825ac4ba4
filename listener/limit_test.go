package listener

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// keepAliveClient is one raw HTTP/1.1 connection that sends requests and keeps the
// connection open between them.
type keepAliveClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAliveClient{c: c, br: bufio.NewReader(c)}
}

func (k *keepAliveClient) send(t *testing.T, path string) {
	t.Helper()
	if _, err := io.WriteString(k.c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
}

// response reads one response within limit, or fails.
func (k *keepAliveClient) response(limit time.Duration) (string, error) {
	k.c.SetReadDeadline(time.Now().Add(limit))
	defer k.c.SetReadDeadline(time.Time{})
	res, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func (k *keepAliveClient) get(t *testing.T, path string) string {
	t.Helper()
	k.send(t, path)
	body, err := k.response(10 * time.Second)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return body
}

// waitIdle waits until n of l's connections are idle (the server reported StateIdle).
func waitIdle(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.limit.mu.Lock()
		idle := 0
		for c := range l.limit.conns {
			if c.state.Load() == stateIdle {
				idle++
			}
		}
		l.limit.mu.Unlock()
		if idle == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections idle, want %d", idle, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Issue 13, item 5: with max_connections full of idle keep-alive clients and one active
// request, a new client is served long before the idle timeout: the connection idle
// longest is closed to make room, the other idle one and the active request are not.
func TestFullListenerClosesOldestIdleForNewClient(t *testing.T) {
	const maxConns = 3
	l := newListener(t, "127.0.0.1", maxConns)
	addr := l.Addr().String()
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "ok "+r.URL.Path)
		}),
		IdleTimeout: 10 * time.Minute, // far beyond the test: only making room frees a slot
		ConnState:   l.ConnState,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		unblock()
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})

	oldest := dialKeepAlive(t, addr)
	oldest.get(t, "/a")
	waitIdle(t, l, 1)
	newer := dialKeepAlive(t, addr)
	newer.get(t, "/b")
	waitIdle(t, l, 2)
	active := dialKeepAlive(t, addr)
	active.send(t, "/slow") // in progress until release

	fresh := dialKeepAlive(t, addr)
	fresh.send(t, "/new")
	body, err := fresh.response(10 * time.Second)
	if err != nil {
		t.Fatalf("a new client on a full listener of idle keep-alive connections was not served: %v", err)
	}
	if body != "ok /new" {
		t.Fatalf("new client got %q", body)
	}
	if n := l.Reclaimed(); n != 1 {
		t.Errorf("Reclaimed = %d, want 1", n)
	}

	// The oldest idle connection was closed; the newer one still serves.
	oldest.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := oldest.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("oldest idle connection: read %v, want EOF (closed to make room)", err)
	}
	if got := newer.get(t, "/b2"); got != "ok /b2" {
		t.Errorf("newer idle connection got %q", got)
	}
	// The active request was never touched: it completes when the handler returns.
	unblock()
	if body, err := active.response(10 * time.Second); err != nil || body != "ok /slow" {
		t.Errorf("active request: %q, %v; want it answered", body, err)
	}
}

// A full listener without idle connections makes no room: nothing in progress is
// closed, and the waiting client is accepted once a connection turns idle.
func TestFullListenerWaitsForIdle(t *testing.T) {
	l := newListener(t, "127.0.0.1", 1)
	addr := l.Addr().String()
	release := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "ok "+r.URL.Path)
		}),
		IdleTimeout: 10 * time.Minute,
		ConnState:   l.ConnState,
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	active := dialKeepAlive(t, addr)
	active.send(t, "/slow")
	fresh := dialKeepAlive(t, addr)
	fresh.send(t, "/new")
	waitQueue(t, l, 1) // the new client waits in the accept queue
	if _, err := fresh.response(200 * time.Millisecond); err == nil {
		t.Fatal("a client beyond max_connections was served while the only connection was busy")
	}
	close(release)
	if body, err := active.response(10 * time.Second); err != nil || !strings.HasPrefix(body, "ok /slow") {
		t.Fatalf("active request: %q, %v", body, err)
	}
	// Now idle, the first connection makes room for the waiting one.
	if body, err := fresh.response(10 * time.Second); err != nil || body != "ok /new" {
		t.Fatalf("waiting client once the other went idle: %q, %v", body, err)
	}
}

// Close ends an Accept that waits for room.
func TestLimitCloseEndsWaitingAccept(t *testing.T) {
	l := newListener(t, "127.0.0.1", 1)
	dial(t, l.Addr().String())
	held := acceptWithin(t, l)
	defer held.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Accept waiting for room did not return after Close")
	}
}
