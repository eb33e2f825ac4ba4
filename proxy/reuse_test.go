package proxy

import (
	"bufio"
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

// TestStrayOnReapedConnectionIsCounted: a stray arrives on an idle inline connection that
// is never taken again; the idle timeout closes it. It is counted all the same (and the
// quarantine begins) when the next request comes.
func TestStrayOnReapedConnectionIsCounted(t *testing.T) {
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
	eventually(t, "the connection reaped", func() bool { return p.inlineIdle() == 0 })
	if n := p.ProtocolErrors().Counts(); n != [len(StrayCases)]uint64{} {
		t.Fatalf("counted before the next request: %v", n)
	}
	getOK(t, c, base+"/", 1)
	if n := p.ProtocolErrors().Counts()[strayIdle]; n != 1 {
		t.Errorf("%d idle strays counted, want 1", n)
	}
	if !p.cur.Load().transport.guard.quarantined() {
		t.Error("no quarantine after a stray")
	}
}
