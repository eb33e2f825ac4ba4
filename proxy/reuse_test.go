package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDoubtfulFramingIsNotKeptAlive answers with both Content-Length and
// Transfer-Encoding (or a length on a 204, or two equal lengths): the client gets the
// response, and the next request, on either path, goes over a new upstream connection.
func TestDoubtfulFramingIsNotKeptAlive(t *testing.T) {
	for _, tc := range []struct{ name, response, body string }{
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "ok"},
		{"two equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "ok"},
		{"length on a 204", "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				c.SetReadDeadline(time.Now().Add(inlineWait))
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, tc.response)
				}
			})
			_, base, _ := inlineFront(t, Options{Upstream: up})
			c := inlineClient(t)
			for i, method := range []string{"GET", "GET", "POST", "POST"} {
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("x")
				}
				req, _ := http.NewRequest(method, base+"/", body)
				status, got := getBody(t, c, req)
				if status/100 != 2 || got != tc.body {
					t.Fatalf("%s %d: %d %q, want %q", method, i, status, got, tc.body)
				}
			}
			if n := accepted.Load(); n != 4 {
				t.Errorf("%d upstream connections for 4 requests, want 4: a doubtful response's connection was reused", n)
			}
		})
	}
}

// TestIdleConnectionThatGotBytesIsDropped has the upstream send a whole extra response on
// a connection that sits idle in the inline pool: the next GET must not take it for its
// answer, and goes over a new connection instead.
func TestIdleConnectionThatGotBytesIsDropped(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"a late response", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"},
		{"a 408 and a close", "HTTP/1.1 408 Request Timeout\r\nContent-Length: 5\r\nConnection: close\r\n\r\nstale"},
		{"a close", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			poke, written := make(chan struct{}), make(chan struct{})
			var first sync.Once
			up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				c.SetReadDeadline(time.Now().Add(inlineWait))
				isFirst := false
				first.Do(func() { isFirst = true })
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					if isFirst {
						<-poke
						io.WriteString(c, tc.extra)
						if tc.extra == "" || strings.Contains(tc.extra, "close") {
							c.(*net.TCPConn).CloseWrite()
						}
						close(written)
						isFirst = false
					}
				}
			})
			p, base, _ := inlineFront(t, Options{Upstream: up})
			c := inlineClient(t)
			getOK(t, c, base+"/", 0)
			eventually(t, "the connection pooled", func() bool { return p.inlineIdle() == 1 })
			close(poke)
			<-written // on loopback the bytes are in the proxy's receive queue now
			getOK(t, c, base+"/", 1)
			if n := p.cur.Load().transport.pool.dropped.Load(); n != 1 {
				t.Errorf("%d idle connections dropped before reuse, want 1", n)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("%d upstream connections, want 2", n)
			}
		})
	}
}

// TestStrayOnReapedConnectionIsCountedOnce: a stray arrives on an idle inline connection
// that is never taken again, and the idle timeout would close it. It is counted once, and
// the quarantine begins: by the idle watch as it arrives, or, where the timeout closes the
// connection before a watch began (an idle timeout under idleWatchDelay), by the next
// request (the reap's deferReport).
func TestStrayOnReapedConnectionIsCountedOnce(t *testing.T) {
	written := make(chan struct{})
	var first sync.Once
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		c.SetReadDeadline(time.Now().Add(inlineWait))
		isFirst := false
		first.Do(func() { isFirst = true })
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if isFirst {
				time.Sleep(20 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
				close(written)
				isFirst = false
			}
		}
	})
	p, base, _ := inlineFront(t, Options{Upstream: up, IdleConnTimeout: 200 * time.Millisecond})
	c := inlineClient(t)
	getOK(t, c, base+"/", 0)
	<-written
	eventually(t, "the connection closed", func() bool { return p.inlineIdle() == 0 })
	time.Sleep(200 * time.Millisecond) // the idle timeout has passed
	getOK(t, c, base+"/", 1)
	if n := p.ProtocolErrors().Counts()[strayIdle]; n != 1 {
		t.Errorf("%d idle strays counted, want 1", n)
	}
	if !p.cur.Load().transport.guard.quarantined() {
		t.Error("no quarantine after a stray")
	}
}

// strayCaught bounds the wait for the idle watch to report a stray: a bound on a wait that
// should end (the watch takes idleWatchDelay and a wake-up), never a speed claim. Without
// the watch the stray waits for the next request or the idle timeout (90 s).
const strayCaught = 2 * time.Second

// TestStrayOnIdleConnectionIsCaughtAsItArrives: a stray arrives on an idle inline
// connection and no request follows. The watch reports it as it arrives (or, when it came
// before the watch began, as the watch begins): counted, the quarantine in force, the
// connection closed, with no request and long before the idle timeout.
func TestStrayOnIdleConnectionIsCaughtAsItArrives(t *testing.T) {
	for _, watched := range []bool{true, false} {
		t.Run(fmt.Sprintf("watched=%v", watched), func(t *testing.T) {
			poke, sent, closed := make(chan struct{}), make(chan time.Time, 1), make(chan struct{})
			up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
				c.SetReadDeadline(time.Now().Add(inlineWait))
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				select {
				case <-poke:
				case <-time.After(inlineWait):
					return
				}
				sent <- time.Now()
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
				if _, err := br.ReadByte(); err != nil { // EOF, or a reset: the stray was unread
					close(closed)
				}
			})
			p, base, _ := inlineFront(t, Options{Upstream: up})
			pool := &p.cur.Load().transport.pool
			getOK(t, inlineClient(t), base+"/", 0)
			eventually(t, "the connection pooled", func() bool {
				pool.mu.Lock()
				defer pool.mu.Unlock()
				// Not yet watched: the stray comes within idleWatchDelay of the answer.
				return len(pool.idle) == 1 && (!watched || (pool.idle[0].watch != nil && pool.idle[0].watch.on))
			})
			close(poke)
			at := <-sent
			deadline := time.Now().Add(strayCaught)
			for p.ProtocolErrors().Counts()[strayIdle] == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the stray on an idle connection was not counted within %v, with no request (counts %v)",
						strayCaught, p.ProtocolErrors().Counts())
				}
				time.Sleep(time.Millisecond)
			}
			t.Logf("counted %v after the stray was written", time.Since(at).Round(time.Millisecond))
			if !p.cur.Load().transport.guard.quarantined() {
				t.Error("counted, but no quarantine")
			}
			select {
			case <-closed:
			case <-time.After(strayCaught):
				t.Error("the connection that got the stray was not closed")
			}
			if n := p.inlineIdle(); n != 0 {
				t.Errorf("%d idle connections kept after the stray", n)
			}
		})
	}
}

// TestIdleWatchLetsGo: a watched idle connection is handed to the next request and reused
// (the watch lets go of it); one that the upstream closes while watched is dropped at once,
// not counted as a stray, and the next request goes over a new connection.
func TestIdleWatchLetsGo(t *testing.T) {
	up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		c.SetReadDeadline(time.Now().Add(inlineWait))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if req.URL.Path == "/close" {
				time.Sleep(5 * idleWatchDelay)
				return
			}
		}
	})
	p, base, errs := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	pool := &p.cur.Load().transport.pool
	for i := range 3 {
		getOK(t, c, base+"/", i)
		eventually(t, "the connection watched", func() bool {
			pool.mu.Lock()
			defer pool.mu.Unlock()
			return len(pool.idle) == 1 && pool.idle[0].watch != nil && pool.idle[0].watch.on
		})
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d upstream connections for 3 requests apart, want 1: a watched connection was not reused", n)
	}
	getOK(t, c, base+"/close", 3)
	eventually(t, "the closed connection dropped", func() bool { return pool.watched.Load() == 1 })
	if n := p.inlineIdle(); n != 0 {
		t.Errorf("%d idle connections kept after the upstream closed its one", n)
	}
	getOK(t, c, base+"/", 4)
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
	if n := p.ProtocolErrors().Counts(); n != [len(StrayCases)]uint64{} {
		t.Errorf("protocol errors %v, want none: a close is no stray", n)
	}
	if n := pool.dropped.Load(); n != 0 {
		t.Errorf("%d connections dropped at hand-out, want 0 (the watch dropped the closed one)", n)
	}
	select {
	case e := <-errs:
		t.Errorf("an exchange failed: %s", e)
	default:
	}
}
