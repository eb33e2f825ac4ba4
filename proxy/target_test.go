package proxy_test

// Tests of the request targets the proxy refuses to forward. A Go client would normalize
// them (GET *, a fragment), so they are sent over raw TCP, to raw upstreams that record
// what they get.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/proxy"
)

// scriptedUpstream is an upstream on raw TCP: for every request it reads (keep-alive), answer
// writes the response bytes to the connection, or closes it by returning false. It records
// each request line it got.
type scriptedUpstream struct {
	URL *url.URL
	mu  sync.Mutex
	got []string // "METHOD target"
}

func newScriptedUpstream(t *testing.T, answer func(c net.Conn, req *http.Request) (keep bool)) *scriptedUpstream {
	t.Helper()
	u := &scriptedUpstream{}
	addr, _ := testenv.ServeRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			u.mu.Lock()
			u.got = append(u.got, req.Method+" "+req.RequestURI)
			u.mu.Unlock()
			if !answer(c, req) {
				return
			}
		}
	})
	u.URL = &url.URL{Scheme: "http", Host: addr}
	return u
}

func (u *scriptedUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.got...)
}

// rawExchange sends request on a fresh connection to addr and returns everything the proxy
// sends back until it closes the connection (requests here ask it to, or are HTTP/1.0).
func rawExchange(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("reading the answer to %q: %v (got %q)", request, err, got)
	}
	return string(got)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// serveFront serves h as drainproxy's public listener does (net/http answers no OPTIONS *
// itself) and returns the address.
func serveFront(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, DisableGeneralOptionsHandler: true}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestRequestTargetsNotForwardedAsTheyAre(t *testing.T) {
	up := newScriptedUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\napp")
		return true
	})
	p, err := proxy.New(proxy.Options{Upstream: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	d := drain.New(drain.Options{})
	seen := make(exchanges, 16)
	d.Observe(seen)
	addr := serveFront(t, d.Handler(p))

	for _, tc := range []struct {
		name, request string
		status        int
		says          string
	}{
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "CONNECT is not proxied"},
		{"GET *", "GET * HTTP/1.1\r\nHost: app.example\r\n\r\n", 400, "only allowed with OPTIONS"},
		{"HEAD *", "HEAD * HTTP/1.1\r\nHost: app.example\r\n\r\n", 400, ""},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: app.example\r\n\r\n", 400, "#fragment"},
		{"fragment in the query", "GET /a?x=1#b HTTP/1.1\r\nHost: app.example\r\n\r\n", 400, "#fragment"},
		{"fragment in an absolute target", "GET http://app.example/a#b HTTP/1.1\r\nHost: app.example\r\n\r\n", 400, "#fragment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.requests())
			got := rawExchange(t, addr, tc.request)
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
			if err != nil {
				t.Fatalf("%q answered %q: %v", tc.request, got, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.says) {
				t.Errorf("%q answered %d %q, want %d saying %q", tc.request, resp.StatusCode, body, tc.status, tc.says)
			}
			if !resp.Close {
				t.Errorf("%q: the connection stays open after the refusal", tc.request)
			}
			if after := up.requests(); len(after) != before {
				t.Errorf("%q reached the app as %q", tc.request, after[before:])
			}
			select {
			case x := <-seen:
				if x.Status != tc.status || x.UpstreamError != proxy.ReasonBadRequest {
					t.Errorf("exchange recorded status %d, upstream_error %q; want %d, %q", x.Status, x.UpstreamError, tc.status, proxy.ReasonBadRequest)
				}
			case <-time.After(waitLimit):
				t.Fatal("no exchange observed")
			}
		})
	}

	// OPTIONS * is for the server as a whole: it reaches the app as it came.
	for _, path := range []string{"", "/base"} {
		t.Run("OPTIONS * with upstream path "+path, func(t *testing.T) {
			u := *up.URL
			u.Path = path
			p, err := proxy.New(proxy.Options{Upstream: &u})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.CloseIdleConnections)
			addr := serveFront(t, p)
			for _, req := range []string{
				"OPTIONS * HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",                        // inline path
				"OPTIONS * HTTP/1.1\r\nHost: app.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", // Transport path
			} {
				before := len(up.requests())
				got := rawExchange(t, addr, req)
				if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\napp") {
					t.Errorf("%q answered %q, want the app's answer", req, got)
				}
				if after := up.requests(); len(after) != before+1 || after[before] != "OPTIONS *" {
					t.Errorf("%q reached the app as %q, want OPTIONS *", req, after[before:])
				}
			}
		})
	}
}
