package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"syscall"
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
		// TCP_CORK: the FIN leaves in the request's segment, as a half-closing client's
		// does on the wire, however late this goroutine gets to the second call.
		if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) })
		}
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
