package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

// TestHalfClosedClientGetsTheAnswer: the binary serves a client that sends its request and
// half-closes (shutdown(SHUT_WR), nc -N) the app's own answer, not an empty 200: the public
// server keeps each request's connection for the proxy (ConnContext). The proxy's tests
// cover TLS, both upstream paths and the clients that really go away.
func TestHalfClosedClientGetsTheAnswer(t *testing.T) {
	p := startProxy(t, "-upstream", startUpstream(t))
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		c.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		body, err := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != http.StatusOK || string(body) != standin.Hello {
			t.Errorf("%q, half-closed: %d %q (%v); want the app's %q", req, resp.StatusCode, body, err, standin.Hello)
		}
	}
}
