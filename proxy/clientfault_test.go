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

// What a client does wrong is the client's: a broken request body is answered 400 and
// recorded as client_body, a deadline the client set (grpc-timeout) as client_deadline,
// never as refused, reset or timeout, the reasons passive health counts against the
// upstream (issue 23, item 2).
func TestClientFaultsAreNotTheUpstreams(t *testing.T) {
	up, _ := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/slow" {
			time.Sleep(200 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	}))
	// Requests with a body take the Transport path (the inline one is for GET, HEAD and
	// OPTIONS without one).
	_, base, errs := inlineFront(t, Options{Upstream: up, ClientBodyTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(base, "http://")
	post := "POST /upload HTTP/1.1\r\nHost: x\r\n"

	// 5 of 100 bytes, then nothing: 408, the client's.
	if status := rawExchange(t, addr, post+"Content-Length: 100\r\n\r\nhello", false); status != http.StatusRequestTimeout {
		t.Errorf("short body, stalled: %d, want 408", status)
	}
	expectErr(t, errs, ReasonClientBodyTimeout+" 408")
	// 5 of 100 bytes, then a half-close: whatever is answered, never a reason passive
	// health counts against the upstream.
	rawExchange(t, addr, post+"Content-Length: 100\r\n\r\nhello", true)
	select {
	case reason := <-errs:
		if r := strings.Fields(reason)[0]; r == ReasonRefused || r == ReasonReset || r == ReasonTimeout {
			t.Errorf("short body, then half-close: recorded %q, the upstream's fault", reason)
		}
	case <-time.After(5 * time.Second):
	}
	for _, tc := range []struct{ name, req string }{
		{"malformed chunk size", post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},
		{"bare LF after the chunk size", post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"},
		{"over-long chunk extension", post + "Transfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("x", 64<<10) + "\r\nh\r\n0\r\n\r\n"},
	} {
		status := rawExchange(t, addr, tc.req, false)
		reason := ""
		select {
		case reason = <-errs:
		case <-time.After(5 * time.Second):
		}
		if status != http.StatusBadRequest || !strings.HasPrefix(reason, ReasonBadRequest+" ") {
			t.Errorf("%s: answered %d, recorded %q; want 400, recorded %s", tc.name, status, reason, ReasonBadRequest)
		}
	}

	// A gRPC call whose own deadline passes while the upstream works.
	_, base, errs = inlineFront(t, Options{Upstream: up})
	req, _ := http.NewRequest("POST", base+"/slow", strings.NewReader("x"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Grpc-Timeout", "1n")
	res, err := inlineClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	reason := ""
	select {
	case reason = <-errs:
	case <-time.After(5 * time.Second):
	}
	if got := res.Header.Get("Grpc-Status"); got != "4" || !strings.HasPrefix(reason, ReasonClientDeadline+" ") {
		t.Errorf("grpc-timeout 1n: grpc-status %q, recorded %q; want 4 (DEADLINE_EXCEEDED), recorded %s", got, reason, ReasonClientDeadline)
	}
}

// rawExchange writes req on a new connection, half-closes it if asked, and returns the
// status of the answer (0 for none).
func rawExchange(t *testing.T, addr, req string, halfClose bool) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}
