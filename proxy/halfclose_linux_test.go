package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/clientconn"
)

// The tests of this file talk to the proxy over raw sockets on 127.0.0.1, as a client that
// half-closes (or resets, or closes) does: net/http's client never half-closes.

const halfCloseWait = 10 * time.Second // a bound on waits that should end; never a speed claim

// halfUpstream is the app: it answers "<method> <path> <body length>", at once, or after
// the delay in the query (?d=2s), and tells whether a request's context ended first.
type halfUpstream struct {
	url      string
	entered  chan string // the path of every request that arrived, as it arrives
	mu       sync.Mutex
	canceled map[string]bool // path -> its context ended before the answer
}

func newHalfUpstream(t *testing.T) *halfUpstream {
	u := &halfUpstream{entered: make(chan string, 64), canceled: map[string]bool{}}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // a request body cut short: nothing to answer
		}
		u.entered <- r.URL.Path
		if d, _ := time.ParseDuration(r.URL.Query().Get("d")); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				u.mu.Lock()
				u.canceled[r.URL.Path] = true
				u.mu.Unlock()
				return
			}
		}
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
	}))
	t.Cleanup(s.Close)
	u.url = s.URL
	return u
}

func (u *halfUpstream) wasCanceled(path string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.canceled[path]
}

// waitEntered waits until the upstream has the request for path.
func (u *halfUpstream) waitEntered(t *testing.T, path string) {
	t.Helper()
	deadline := time.After(halfCloseWait)
	for {
		select {
		case p := <-u.entered:
			if p == path {
				return
			}
		case <-deadline:
			t.Fatalf("the upstream never got %s", path)
		}
	}
}

// halfFront is the proxy to u as the binary serves it: behind drain's wrapper (what the
// access log sees goes to seen), on a server that keeps each request's connection in its
// context (clientconn.ConnContext), in plain HTTP or TLS.
type halfFront struct {
	p    *Proxy
	addr string
	tls  *tls.Config // for the client; nil for plain HTTP
	seen chan drain.Exchange
	srv  *httptest.Server
}

type seenExchanges chan drain.Exchange

func (c seenExchanges) Observe(x *drain.Exchange) {
	select {
	case c <- *x:
	default:
	}
}

func newHalfFront(t *testing.T, upstream string, useTLS bool) *halfFront {
	t.Helper()
	p, err := New(Options{Upstream: halfURL(t, upstream)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	d := drain.New(drain.Options{})
	f := &halfFront{p: p, seen: make(chan drain.Exchange, 64)}
	d.Observe(seenExchanges(f.seen))
	s := httptest.NewUnstartedServer(d.Handler(p))
	s.Config.ConnContext = clientconn.ConnContext
	if useTLS {
		s.StartTLS()
		roots := x509.NewCertPool()
		roots.AddCert(s.Certificate())
		f.tls = &tls.Config{RootCAs: roots, ServerName: "example.com"}
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	f.srv = s
	f.addr = s.Listener.Addr().String()
	return f
}

// exchange waits for what drain's wrapper (the access log) saw of the next request.
func (f *halfFront) exchange(t *testing.T) drain.Exchange {
	t.Helper()
	select {
	case x := <-f.seen:
		return x
	case <-time.After(halfCloseWait):
		t.Fatal("the access log saw no exchange")
		return drain.Exchange{}
	}
}

// rawConn is one client connection to the front, plain or TLS.
type rawConn struct {
	tcp  *net.TCPConn
	conn net.Conn // tcp, or the TLS connection over it
}

func (f *halfFront) dial(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.addr, halfCloseWait)
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{tcp: c.(*net.TCPConn), conn: c}
	t.Cleanup(func() { c.Close() })
	if f.tls != nil {
		tc := tls.Client(c, f.tls)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		rc.conn = tc
	}
	c.SetDeadline(time.Now().Add(halfCloseWait))
	return rc
}

// halfClose ends the client's sending and nothing else: a FIN, or on TLS a close_notify.
func (c *rawConn) halfClose(t *testing.T) {
	t.Helper()
	var err error
	if tc, ok := c.conn.(*tls.Conn); ok {
		err = tc.CloseWrite()
	} else {
		err = c.tcp.CloseWrite()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// sendAndHalfClose writes raw and half-closes right behind it. A plain-TCP FIN goes out in
// the same segment as the request's end (TCP_CORK holds the bytes until the FIN joins
// them), as a half-closing client's FIN does on the wire, however long this goroutine
// waits between the two calls on a loaded machine.
func (c *rawConn) sendAndHalfClose(t *testing.T, raw string) {
	t.Helper()
	if c.conn == net.Conn(c.tcp) {
		cork(t, c.tcp)
	}
	if _, err := io.WriteString(c.conn, raw); err != nil {
		t.Fatal(err)
	}
	c.halfClose(t)
}

func cork(t *testing.T, c *net.TCPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}

// reset closes the connection with a RST.
func (c *rawConn) reset() {
	c.tcp.SetLinger(0)
	c.tcp.Close()
}

// answer reads what the client gets: a response (with its whole body), or the error that
// ended the connection first.
func (c *rawConn) answer(method string) (status int, body string, err error) {
	br := bufio.NewReader(c.conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// request is the head (and body) of an HTTP/1.x request for the front. Which upstream
// path it takes follows the inline path's rules (inlinable): a bodiless GET goes inline
// unless it asks to close its connection (an HTTP/1.0 one does, unless it asks to be
// kept alive); a POST goes to the http.Transport.
func request(method, path, proto string, inline bool, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\nHost: example.com\r\n", method, path, proto)
	switch {
	case inline && proto == "HTTP/1.0":
		b.WriteString("Connection: keep-alive\r\n")
	case !inline && proto == "HTTP/1.1":
		b.WriteString("Connection: close\r\n")
	}
	if method == "POST" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

// checkPath makes sure the test's request takes the upstream path the case is named for.
func checkPath(t *testing.T, raw string, inline bool) {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if r.ContentLength == 0 {
		r.Body = http.NoBody
	}
	it := &inlineTransport{dial: func(context.Context) (net.Conn, error) { return nil, nil }}
	if got := it.inlinable(r); got != inline {
		t.Fatalf("inlinable = %v for the %q case, want %v", got, raw, inline)
	}
}

// TestHalfClosedClientGetsTheAppsAnswer: a client that sends a complete request and then
// half-closes gets the app's own response, for GET and POST, HTTP/1.0 and 1.1, plain and
// TLS, through both upstream paths, and the access log records it.
func TestHalfClosedClientGetsTheAppsAnswer(t *testing.T) {
	up := newHalfUpstream(t)
	fronts := map[bool]*halfFront{false: newHalfFront(t, up.url, false), true: newHalfFront(t, up.url, true)}
	type tc struct {
		method, proto string
		tls, inline   bool
		delay         string
	}
	var cases []tc
	for _, useTLS := range []bool{false, true} {
		for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
			for _, inline := range []bool{true, false} {
				cases = append(cases, tc{"GET", proto, useTLS, inline, ""})
			}
			cases = append(cases, tc{"POST", proto, useTLS, false, ""})
		}
	}
	// The app taking 2 s: a few, across both paths and both kinds of connection.
	cases = append(cases, tc{"GET", "HTTP/1.1", false, true, "2s"}, tc{"POST", "HTTP/1.0", true, false, "2s"},
		tc{"GET", "HTTP/1.0", true, false, "2s"})
	t.Run("cases", func(t *testing.T) {
		for i, c := range cases {
			path := "/fast"
			if c.delay != "" {
				path = "/slow"
			}
			name := fmt.Sprintf("%s_%s_tls=%v_inline=%v%s", c.method, strings.TrimPrefix(c.proto, "HTTP/"), c.tls, c.inline, path)
			path = fmt.Sprintf("%s/%d", path, i)
			target := path
			if c.delay != "" {
				target += "?d=" + c.delay
			}
			body := ""
			if c.method == "POST" {
				body = "a=1&b=2"
			}
			raw := request(c.method, target, c.proto, c.inline, body)
			checkPath(t, raw, c.inline)
			f := fronts[c.tls]
			t.Run(name, func(t *testing.T) {
				if c.delay != "" {
					t.Parallel() // the slow ones wait together
				}
				conn := f.dial(t)
				conn.sendAndHalfClose(t, raw)
				status, got, err := conn.answer(c.method)
				want := fmt.Sprintf("%s %s %d", c.method, path, len(body))
				if err != nil || status != http.StatusOK || got != want {
					t.Fatalf("half-closed client got %d %q (%v), want the app's 200 %q", status, got, err, want)
				}
				if up.wasCanceled(path) {
					t.Error("the app's request was canceled, yet its answer arrived")
				}
			})
		}
	}) // the parallel ones are done here
	// The access log: one 200 with the app's body per request, nothing else.
	for range cases {
		var x drain.Exchange
		select {
		case x = <-fronts[false].seen:
		case x = <-fronts[true].seen:
		case <-time.After(halfCloseWait):
			t.Fatal("the access log saw fewer exchanges than requests")
		}
		if x.Status != http.StatusOK || x.UpstreamError != "" || x.BytesOut == 0 {
			t.Errorf("access log: %s %s: status %d, %d bytes, error %q; want the app's 200",
				x.Request.Method, x.Request.URL.Path, x.Status, x.BytesOut, x.UpstreamError)
		}
	}
}

// TestGoneClientCancelsTheUpstreamRequest: a client that really went away (a RST; a TLS
// or plain close well after its request; a RST after a half-close) still ends the app's
// request at once, gets nothing invented, and the access log says 499.
func TestGoneClientCancelsTheUpstreamRequest(t *testing.T) {
	up := newHalfUpstream(t)
	for _, useTLS := range []bool{false, true} {
		f := newHalfFront(t, up.url, useTLS)
		for _, how := range []string{"reset", "close", "halfclose-then-reset"} {
			for _, inline := range []bool{true, false} {
				name := fmt.Sprintf("%s_tls=%v_inline=%v", how, useTLS, inline)
				t.Run(name, func(t *testing.T) {
					path := "/hold/" + strings.ReplaceAll(name, "=", "")
					raw := request("GET", path+"?d=30s", "HTTP/1.1", inline, "")
					checkPath(t, raw, inline)
					conn := f.dial(t)
					if _, err := io.WriteString(conn.conn, raw); err != nil {
						t.Fatal(err)
					}
					up.waitEntered(t, path)
					switch how {
					case "reset":
						conn.reset()
					case "close":
						// Well after the request, as a client that gives up does.
						time.Sleep(3 * halfCloseWindow)
						conn.conn.Close() // TLS: close_notify, then FIN
					case "halfclose-then-reset":
						conn.halfClose(t)
						time.Sleep(3 * halfClosePoll)
						conn.reset()
					}
					deadline := time.Now().Add(halfCloseWait)
					for !up.wasCanceled(path) {
						if time.Now().After(deadline) {
							t.Fatal("the app's request went on after its client went away")
						}
						time.Sleep(5 * time.Millisecond)
					}
					x := f.exchange(t)
					if x.Status != StatusClientClosedRequest || x.UpstreamError != ReasonClientCanceled {
						t.Errorf("access log: status %d, error %q; want 499 client_canceled", x.Status, x.UpstreamError)
					}
				})
			}
		}
	}
}

// TestNoInventedAnswer: when drainproxy has no answer from the app for a client that is
// still there, what it sends is never a 2xx: a request body that ends before its length
// (the client half-closed mid-body) gets a 400, and a client the proxy gives up on gets
// the connection closed, not net/http's empty 200.
func TestNoInventedAnswer(t *testing.T) {
	up := newHalfUpstream(t)
	for _, useTLS := range []bool{false, true} {
		f := newHalfFront(t, up.url, useTLS)
		t.Run(fmt.Sprintf("short-body_tls=%v", useTLS), func(t *testing.T) {
			conn := f.dial(t)
			conn.sendAndHalfClose(t, "POST /short HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\nonly ten b")
			status, body, err := conn.answer("POST")
			if err != nil || status != http.StatusBadRequest {
				t.Fatalf("got %d %q (%v), want 400", status, body, err)
			}
			x := f.exchange(t)
			if x.Status != http.StatusBadRequest || x.UpstreamError != ReasonBadRequest {
				t.Errorf("access log: status %d, error %q; want 400 bad_request", x.Status, x.UpstreamError)
			}
		})
	}
	// A client the proxy takes for gone while it still reads: a plain-TCP FIN well after the
	// request (it may have half-closed late). It gets no response at all, never a 200.
	f := newHalfFront(t, up.url, false)
	for _, inline := range []bool{true, false} {
		t.Run(fmt.Sprintf("late-fin_inline=%v", inline), func(t *testing.T) {
			path := fmt.Sprintf("/late/%v", inline)
			conn := f.dial(t)
			io.WriteString(conn.conn, request("GET", path+"?d=30s", "HTTP/1.1", inline, ""))
			up.waitEntered(t, path)
			time.Sleep(3 * halfCloseWindow)
			conn.halfClose(t)
			got, err := io.ReadAll(conn.conn)
			if err != nil || len(got) != 0 {
				t.Fatalf("got %q (%v), want the connection closed without a response", got, err)
			}
			if x := f.exchange(t); x.Status != StatusClientClosedRequest {
				t.Errorf("access log: status %d, want 499", x.Status)
			}
		})
	}
}

// TestShortBodyThenHalfCloseIsAnswered400: a client announces 100 body bytes, sends 5 and
// half-closes (shutdown(SHUT_WR)) a while later, as a client that gives up sending does.
// Its FIN came well after its last byte, which for a complete request means a client that
// went away; but it came before the body's end, so it says nothing about whether the client
// still reads: the body ended short, the client's error, and it gets a 400 (as nginx
// answers a client that closed mid-body), never counted against the upstream. A client
// that resets mid-body is gone: nothing answered, 499.
func TestShortBodyThenHalfCloseIsAnswered400(t *testing.T) {
	up := newHalfUpstream(t)
	head := "POST /short HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n"
	for _, useTLS := range []bool{false, true} {
		f := newHalfFront(t, up.url, useTLS)
		t.Run(fmt.Sprintf("late-half-close_tls=%v", useTLS), func(t *testing.T) {
			conn := f.dial(t)
			io.WriteString(conn.conn, head+"hello")
			time.Sleep(3 * halfCloseWindow)
			conn.halfClose(t)
			status, body, err := conn.answer("POST")
			if err != nil || status != http.StatusBadRequest {
				t.Fatalf("got %d %q (%v), want 400", status, body, err)
			}
			x := f.exchange(t)
			if x.Status != http.StatusBadRequest || x.UpstreamError != ReasonBadRequest {
				t.Errorf("access log: status %d, error %q; want 400 bad_request", x.Status, x.UpstreamError)
			}
		})
		t.Run(fmt.Sprintf("reset_tls=%v", useTLS), func(t *testing.T) {
			conn := f.dial(t)
			io.WriteString(conn.conn, head+"hello")
			time.Sleep(3 * halfCloseWindow)
			conn.reset()
			x := f.exchange(t)
			if x.Status != StatusClientClosedRequest || x.UpstreamError != ReasonClientCanceled {
				t.Errorf("access log: status %d, error %q; want 499 client_canceled", x.Status, x.UpstreamError)
			}
		})
	}
}

// TestFinBeforeTheBodyEndsIsNoVerdict is the rule under TestShortBodyThenHalfCloseIsAnswered400,
// on a real socket: a FIN well after the last byte (a client that gave up, for a complete
// request) says nothing while the request's body is unfinished; once the body came in
// full, or without one, it says gone, as before.
func TestFinBeforeTheBodyEndsIsNoVerdict(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	io.WriteString(client, "hello")
	time.Sleep(3 * halfCloseWindow)
	client.(*net.TCPConn).CloseWrite()
	deadline := time.Now().Add(halfCloseWait)
	for clientconn.Read(server).State != clientconn.StateCloseWait {
		if time.Now().After(deadline) {
			t.Fatal("the FIN never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	ended := &sentBody{ReadCloser: http.NoBody}
	ended.ended.Store(true)
	for _, tc := range []struct {
		name string
		body *sentBody
		want bool
	}{
		{"body unfinished", &sentBody{ReadCloser: http.NoBody}, true},
		{"body complete", ended, false},
		{"no body", nil, false},
	} {
		w := clientWatch{conn: server, body: tc.body}
		if got := w.stillThere(true); got != tc.want {
			t.Errorf("%s: still there = %v after a late FIN, want %v", tc.name, got, tc.want)
		}
	}
}

func halfURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestClosingTheServerEndsAHalfClosedRequest: the drain's deadline closes every client
// connection (http.Server.Close); a request of a half-closed client, which net/http has no
// read left to fail, ends with it all the same.
func TestClosingTheServerEndsAHalfClosedRequest(t *testing.T) {
	up := newHalfUpstream(t)
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			f := newHalfFront(t, up.url, useTLS)
			path := fmt.Sprintf("/deadline/%v", useTLS)
			conn := f.dial(t)
			conn.sendAndHalfClose(t, request("GET", path+"?d=30s", "HTTP/1.1", true, ""))
			up.waitEntered(t, path)
			f.srv.CloseClientConnections()
			deadline := time.Now().Add(halfCloseWait)
			for !up.wasCanceled(path) {
				if time.Now().After(deadline) {
					t.Fatal("the app's request went on after the server closed its client's connection")
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
