package main

// What the binary passes between client and app unchanged, end to end: the parts that
// depend on how run builds its servers and its logger, not only on package proxy.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/internal/testlog"
)

// rawRequest sends request on a fresh connection to addr and returns what comes back until
// the proxy closes the connection.
func rawRequest(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", request, err)
	}
	return string(got)
}

// OPTIONS * is the app's to answer: net/http's server answers it itself unless told not to.
func TestOptionsStarReachesTheApp(t *testing.T) {
	var mu sync.Mutex
	var targets []string
	up := serveUpstreamWith(t, &http.Server{DisableGeneralOptionsHandler: true,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			targets = append(targets, r.Method+" "+r.RequestURI)
			mu.Unlock()
			w.Header().Set("Allow", "GET, OPTIONS")
			io.WriteString(w, "the app's options")
		})})
	p := startProxy(t, "-upstream", "http://"+up)
	got := rawRequest(t, p.Addr, "OPTIONS * HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
	if !strings.Contains(got, "\r\nAllow: GET, OPTIONS\r\n") || !strings.HasSuffix(got, "the app's options") {
		t.Errorf("OPTIONS * answered %q, want the app's answer", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(targets) != 1 || targets[0] != "OPTIONS *" {
		t.Errorf("the app got %q, want OPTIONS *", targets)
	}
}

// serveUpstreamWith serves srv on a fresh 127.0.0.1 port and returns the address.
func serveUpstreamWith(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// No Content-Type is invented for a response the app sent without one, over the TLS
// front's HTTP/2 (x/net/http2) as over HTTP/1.1.
func TestNoContentTypeInventedOverTLS(t *testing.T) {
	const page = "<html><body>a user's file</body></html>" // text/html to a sniffer
	up := serveUpstreamWith(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // none at all
		io.WriteString(w, page)
	})})
	_, _, tlsPort, ca, _ := tlsStaticProxy(t, "http://"+up)
	for _, h2 := range []bool{true, false} {
		c := tlsClient(tlsPort, ca.Pool, h2)
		resp, err := c.Get(fmt.Sprintf("https://%s:%d/file", tlsDomain, tlsPort))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		if string(body) != page || resp.ProtoMajor != map[bool]int{true: 2, false: 1}[h2] {
			t.Fatalf("h2 %v: %s %q", h2, resp.Proto, body)
		}
		if ct, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("%s: Content-Type %q, want none, as the app sent none", resp.Proto, ct)
		}
	}
}

// What net/http's Transport writes with the standard log package reaches stderr through
// hclog, as JSON when the logs are JSON: not as a plain-text line in the JSON stream.
func TestTransportLogLinesAreJSON(t *testing.T) {
	addr, _ := testenv.ServeRaw(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		// The answer, then bytes nobody asked for on the now idle connection.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsneaky")
		io.Copy(io.Discard, c)
	})
	p := startProxy(t, "-upstream", "http://"+addr)
	// A POST goes through the http.Transport, whose idle connection then gets the rest.
	resp, err := http.Post(p.URL()+"/", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	line := p.waitRaw(t, "Unsolicited response", 10*time.Second)
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("the Transport's line is not JSON: %q", line)
	}
	if m["@level"] != "warn" || m["@module"] != "drainproxy.stdlog" {
		t.Errorf("the Transport's line has level %v, module %v; want warn, drainproxy.stdlog: %q", m["@level"], m["@module"], line)
	}
}

// waitRaw waits for a stderr line containing s and returns it.
func (p *proc) waitRaw(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for seen := 0; ; {
		p.mu.Lock()
		for ; seen < len(p.raw); seen++ {
			if strings.Contains(p.raw[seen], s) {
				line := p.raw[seen]
				p.mu.Unlock()
				return line
			}
		}
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.exited:
			t.Fatalf("drainproxy exited without logging %q", s)
		case <-deadline.C:
			t.Fatalf("drainproxy did not log %q within %v", s, timeout)
		}
	}
}

// The access log line of a response the upstream cut short says so, and counts the body
// bytes the client got.
func TestAccessLogLineOfAResponseCutShort(t *testing.T) {
	const sent = 20 << 10
	addr, _ := testenv.ServeRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", sent))
	})
	path := filepath.Join(t.TempDir(), "access.log")
	p := startProxy(t, "-upstream", "http://"+addr, "-access-log", path)
	got := rawRequest(t, p.Addr, "GET /file HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
	_, body, _ := strings.Cut(got, "\r\n\r\n")
	if len(body) != sent {
		t.Errorf("the client got %d body bytes of the %d that came", len(body), sent)
	}
	p.WaitLog("upstream response cut short", 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	lines := testlog.JSONLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("%d access log lines, want 1: %v", len(lines), lines)
	}
	if m := lines[0]; m["upstream_error"] != "reset" || m["status"] != 200.0 || m["bytes_out"] != float64(len(body)) {
		t.Errorf("access log line %v: want status 200, upstream_error reset, bytes_out %d", m, len(body))
	}
}
