package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Issue 23, item 7: the bound of max1xx informational responses holds on the Transport
// path (a request with a body) as on the inline one: at most max1xx reach the client,
// then a 502, instead of thousands of "100 Continue" heads forwarded as they come.
func TestTransportPath1xxBound(t *testing.T) {
	up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 2000))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	_, base, errs := inlineFront(t, Options{Upstream: up})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
	got, _ := io.ReadAll(c)
	n := strings.Count(string(got), "HTTP/1.1 100 Continue")
	if n > max1xx {
		t.Errorf("%d 100 Continue heads reached the client, want at most %d", n, max1xx)
	}
	if !strings.Contains(string(got), "HTTP/1.1 502") {
		t.Errorf("no 502 after too many 1xx; the client got %.300q", got)
	}
	expectErr(t, errs, "other 502")
}
