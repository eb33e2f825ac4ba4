package proxy

// Tests of the inline fast path (inline.go) on real 127.0.0.1 sockets. They sit inside the
// package to look at the idle pool; everything else goes over the wire.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

const inlineWait = 10 * time.Second

// connCounter counts an upstream server's connections by state.
type connCounter struct{ opened, closed atomic.Int64 }

func (c *connCounter) hook(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		c.opened.Add(1)
	case http.StateClosed, http.StateHijacked:
		c.closed.Add(1)
	}
}

// inlineUpstream serves h as the upstream, counting its connections.
func inlineUpstream(t *testing.T, h http.Handler) (*url.URL, *connCounter) {
	t.Helper()
	cc := &connCounter{}
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = cc.hook
	s.Start()
	t.Cleanup(s.Close)
	u, _ := url.Parse(s.URL)
	return u, cc
}

// recorder is a ResponseWriter wrapper that records the upstream error reason, as the
// binary's access log does.
type recorder struct {
	http.ResponseWriter
	mu     sync.Mutex
	reason string
	status int
}

func (r *recorder) RecordUpstreamError(reason string, status int, _ error) {
	r.mu.Lock()
	r.reason, r.status = reason, status
	r.mu.Unlock()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// inlineFront serves a proxy for opts; every exchange's recorded error goes to errs.
func inlineFront(t *testing.T, opts Options) (p *Proxy, base string, errs chan string) {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	errs = make(chan string, 16)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		defer func() { // deferred: a client that went away ends the handler with a panic
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.reason != "" {
				errs <- fmt.Sprintf("%s %d", rec.reason, rec.status)
			}
		}()
		p.ServeHTTP(rec, r)
	}))
	t.Cleanup(s.Close)
	return p, s.URL, errs
}

func inlineClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (p *Proxy) inlineIdle() int { return p.cur.Load().transport.pool.idleCount() }

// getOK sends the i-th GET of url and fails the test unless the answer is 200 "ok".
func getOK(t *testing.T, c *http.Client, url string, i int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if status, body := getBody(t, c, req); status != 200 || body != "ok" {
		t.Fatalf("GET %d of %s: %d %q, want 200 ok", i, url, status, body)
	}
}

func getBody(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(inlineWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func expectErr(t *testing.T, errs chan string, want string) {
	t.Helper()
	select {
	case got := <-errs:
		if got != want {
			t.Errorf("recorded upstream error %q, want %q", got, want)
		}
	case <-time.After(inlineWait):
		t.Fatalf("no upstream error recorded, want %q", want)
	}
}

func TestInlineSequentialGETsReuseOneConnection(t *testing.T) {
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	p, base, _ := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	for i := range 30 {
		method := []string{"GET", "HEAD", "OPTIONS"}[i%3]
		req, _ := http.NewRequest(method, base+"/x", nil)
		status, body := getBody(t, c, req)
		want := method + " /x"
		if method == "HEAD" {
			want = ""
		}
		if status != 200 || body != want {
			t.Fatalf("%s: %d %q, want 200 %q", method, status, body, want)
		}
	}
	// A HEAD answered with a Content-Length may be followed by the body anyway (an app
	// that answers HEAD like GET), so its connection is not reused: one more each.
	if n := cc.opened.Load(); n != 1+10 {
		t.Errorf("30 sequential requests (10 HEAD) opened %d upstream connections, want 11", n)
	}
	// The connection sits in the inline pool, not the Transport's, and holds no buffer
	// while idle.
	if n := p.inlineIdle(); n != 1 {
		t.Errorf("inline pool holds %d connections, want 1", n)
	}
	pool := &p.cur.Load().transport.pool
	pool.mu.Lock()
	for _, uc := range pool.idle {
		if uc.br != nil {
			t.Error("an idle pooled connection still holds its read buffer")
		}
	}
	pool.mu.Unlock()
}

func TestInlineBytesPastTheResponseRetireTheConnection(t *testing.T) {
	// A broken upstream sends more than the response it announced. What follows must not
	// be read as the answer to the next request on that connection.
	up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+
				"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
		}
	})
	p, base, _ := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	for i := range 3 {
		getOK(t, c, base+"/", i)
		eventually(t, "the connection closed", func() bool { return p.inlineIdle() == 0 })
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("%d upstream connections for 3 requests, want 3 (one per exchange)", n)
	}
}

func TestInlineFallbackForOtherRequests(t *testing.T) {
	up, _ := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
	}))
	p, base, _ := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)

	for _, tc := range []struct {
		name string
		req  func() *http.Request
		want string
	}{
		{"POST with a body", func() *http.Request {
			r, _ := http.NewRequest("POST", base+"/", strings.NewReader("hi"))
			return r
		}, "POST hi"},
		{"bodiless DELETE", func() *http.Request {
			r, _ := http.NewRequest("DELETE", base+"/", nil)
			return r
		}, "DELETE "},
		{"GET with a chunked body", func() *http.Request {
			r, _ := http.NewRequest("GET", base+"/", io.NopCloser(strings.NewReader("b")))
			r.ContentLength = -1
			return r
		}, "GET b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := getBody(t, c, tc.req())
			if status != 200 || body != tc.want {
				t.Fatalf("%d %q, want 200 %q", status, body, tc.want)
			}
			if n := p.inlineIdle(); n != 0 {
				t.Errorf("inline pool holds %d connections: the request took the fast path", n)
			}
		})
	}

	t.Run("not inlinable", func(t *testing.T) {
		it := p.cur.Load().transport
		get := func(h http.Header) *http.Request {
			return &http.Request{Method: "GET", ProtoMajor: 1, Header: h, URL: up}
		}
		if !it.inlinable(get(http.Header{})) {
			t.Fatal("a plain GET is not inlinable")
		}
		h2 := get(http.Header{})
		h2.ProtoMajor = 2
		for name, r := range map[string]*http.Request{
			"upgrade": get(http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}),
			"expect":  get(http.Header{"Expect": {"100-continue"}}),
			"http2":   h2,
		} {
			if it.inlinable(r) {
				t.Errorf("%s: inlinable", name)
			}
		}
		ps, err := New(Options{Upstream: &url.URL{Scheme: "https", Host: "127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		if ps.cur.Load().transport.inlinable(get(http.Header{})) {
			t.Error("a GET to an https upstream is inlinable")
		}
	})
}

// rawUpstream serves every connection with fn on a bare listener.
func rawUpstream(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) (*url.URL, *atomic.Int64) {
	t.Helper()
	addr, accepted := testenv.ServeRaw(t, fn)
	return &url.URL{Scheme: "http", Host: addr}, accepted
}

// TestInlineStaleConnectionIsRetried: the app answers the first request on a connection
// and closes the connection when the second arrives, without answering (its idle timeout
// firing as the request comes in). The proxy's check at hand-out finds the connection open;
// the write goes through; the read finds the close. Nothing came back and the GET is
// bodiless: the retry sends it again on a new connection, and the client never sees it.
func TestInlineStaleConnectionIsRetried(t *testing.T) {
	up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		http.ReadRequest(br) // and close, unanswered
	})
	_, base, errs := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	for i := range 3 {
		getOK(t, c, base+"/", i)
	}
	// 1: answered; 2: closed unanswered, retried on a new one (answered); 3: closed, retried.
	if n := accepted.Load(); n != 3 {
		t.Errorf("%d upstream connections for 3 requests, want 3", n)
	}
	select {
	case e := <-errs:
		t.Errorf("an exchange failed: %s", e)
	default:
	}
}

// TestFallbackStaleConnectionIsRetried is the same on the http.Transport's path: a POST
// goes out on a kept connection that the guard closes as it is handed over (the previous
// response's framing was doubtful: two equal Content-Lengths). Nothing was written, so the
// POST must go out again on a new connection: replayBody's GetBody lets the Transport
// retry it itself (its "nothing written" error; this fails without GetBody).
// fallbackRoundTrip's loop does not matter here (this passes without it);
// TestFallbackPOSTOnIdleConnectionClosedAtHandOut is the case it covers. Every POST must
// get its answer.
func TestFallbackStaleConnectionIsRetried(t *testing.T) {
	up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if req.URL.Path == "/doubtful" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, base, errs := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	const rounds = 30
	for i := range rounds {
		for _, path := range []string{"/doubtful", "/"} {
			req, _ := http.NewRequest("POST", base+path, strings.NewReader("body"))
			if status, body := getBody(t, c, req); status != 200 || body != "ok" {
				t.Fatalf("POST %s %d: %d %q, want 200 ok", path, i, status, body)
			}
		}
	}
	if n := accepted.Load(); n < rounds {
		t.Errorf("%d upstream connections for %d doubtful responses: the doomed ones were reused", n, rounds)
	}
	select {
	case e := <-errs:
		t.Errorf("an exchange failed: %s", e)
	default:
	}
}

// TestFallbackPOSTOnIdleConnectionClosedAtHandOut is the case only fallbackRoundTrip's
// retry covers: the app closes a kept connection (its idle timeout) just after the guard's
// check passed it to a POST, before the Transport counted the POST on it. The Transport's
// read loop reads the FIN first and fails the connection with "server closed idle
// connection", which it retries only for idempotent requests; nothing was written, so
// the POST goes out again on a new connection. The FIN is made to come in that window: a
// trace hook run at hand-out (after the guard's) has the app close the connection and
// waits until the read loop has closed it too.
func TestFallbackPOSTOnIdleConnectionClosedAtHandOut(t *testing.T) {
	closeNow := make(chan struct{}, 1)
	up, accepted := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		c.SetReadDeadline(time.Now().Add(inlineWait))
		go func() {
			select {
			case <-closeNow:
				c.Close() // a FIN, the app's idle timeout
			case <-time.After(inlineWait):
			}
		}()
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p, err := New(Options{Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	var armed atomic.Bool
	hook := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		g, ok := info.Conn.(*guardedConn)
		if !ok || !info.Reused || !armed.CompareAndSwap(true, false) {
			return
		}
		closeNow <- struct{}{}
		deadline := time.Now().Add(inlineWait)
		for {
			g.mu.Lock()
			closed := g.closed
			g.mu.Unlock()
			if closed || time.Now().After(deadline) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}}
	errs := make(chan string, 4)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		p.ServeHTTP(rec, r.WithContext(httptrace.WithClientTrace(r.Context(), hook)))
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.reason != "" {
			errs <- fmt.Sprintf("%s %d", rec.reason, rec.status)
		}
	}))
	t.Cleanup(s.Close)
	c := inlineClient(t)
	for i := range 2 {
		armed.Store(i == 1)
		req, _ := http.NewRequest("POST", s.URL+"/", strings.NewReader("body"))
		if status, body := getBody(t, c, req); status != 200 || body != "ok" {
			t.Fatalf("POST %d: %d %q, want 200 ok", i, status, body)
		}
	}
	if armed.Load() {
		t.Fatal("the second POST was not given the kept connection")
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (the second POST sent again on a new one)", n)
	}
	select {
	case e := <-errs:
		t.Errorf("an exchange failed: %s", e)
	default:
	}
}

func TestInlineAbandonedEndlessStream(t *testing.T) {
	upDone := make(chan struct{}, 1)
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { upDone <- struct{}{} }()
		chunk := strings.Repeat("x", 1024)
		for {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}))
	p, base, _ := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	before := runtime.NumGoroutine()

	resp, err := c.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 8192)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // abandons the stream: the client closes its connection
	select {
	case <-upDone:
	case <-time.After(inlineWait):
		t.Fatal("the upstream handler never saw the stream abandoned")
	}
	eventually(t, "upstream connection closed", func() bool { return cc.closed.Load() == 1 })
	if n := p.inlineIdle(); n != 0 {
		t.Errorf("the abandoned stream's connection went back to the pool (%d idle)", n)
	}
	c.CloseIdleConnections()
	eventually(t, "goroutines back", func() bool { return runtime.NumGoroutine() <= before })
}

func TestInlineResponseHeaderTimeoutAnswers504(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	p, base, errs := inlineFront(t, Options{Upstream: up, ResponseHeaderTimeout: 100 * time.Millisecond})
	req, _ := http.NewRequest("GET", base+"/", nil)
	status, body := getBody(t, inlineClient(t), req)
	if status != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer in time") {
		t.Errorf("%d %q, want 504", status, body)
	}
	expectErr(t, errs, "timeout 504")
	eventually(t, "upstream connection closed", func() bool { return cc.closed.Load() == 1 })
	if n := p.inlineIdle(); n != 0 {
		t.Errorf("%d idle after a timeout, want 0", n)
	}
}

func TestInlineClientCancelIs499AndDropsConnection(t *testing.T) {
	entered := make(chan struct{}, 1)
	upCanceled := make(chan struct{}, 1)
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fast" {
			io.WriteString(w, "fast")
			return
		}
		entered <- struct{}{}
		<-r.Context().Done()
		upCanceled <- struct{}{}
	}))
	// A header timeout armed too: the poisoned deadline must still count as the client's.
	p, base, errs := inlineFront(t, Options{Upstream: up, ResponseHeaderTimeout: 5 * time.Second})
	c := inlineClient(t)

	req, _ := http.NewRequest("GET", base+"/fast", nil)
	if status, _ := getBody(t, c, req); status != 200 {
		t.Fatalf("GET /fast: %d", status)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/slow", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-entered:
	case <-time.After(inlineWait):
		t.Fatal("the request never reached the upstream")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	select {
	case <-upCanceled:
	case <-time.After(inlineWait):
		t.Fatal("the upstream request was not canceled")
	}
	expectErr(t, errs, "client_canceled 499")
	eventually(t, "upstream connection closed", func() bool { return cc.closed.Load() == 1 })
	if n := p.inlineIdle(); n != 0 {
		t.Errorf("%d idle after a cancel, want 0: the canceled connection was kept", n)
	}
	// The next request dials afresh and works.
	req, _ = http.NewRequest("GET", base+"/fast", nil)
	if status, body := getBody(t, c, req); status != 200 || body != "fast" {
		t.Fatalf("GET /fast after the cancel: %d %q", status, body)
	}
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

func TestInline1xx(t *testing.T) {
	hints := func(n int) func(c net.Conn, br *bufio.Reader) {
		return func(c net.Conn, br *bufio.Reader) {
			for {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", n))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	}
	t.Run("a few pass", func(t *testing.T) {
		up, _ := rawUpstream(t, hints(2))
		_, base, _ := inlineFront(t, Options{Upstream: up})
		getOK(t, inlineClient(t), base+"/", 0)
	})
	t.Run("too many", func(t *testing.T) {
		up, _ := rawUpstream(t, hints(max1xx+1))
		_, base, errs := inlineFront(t, Options{Upstream: up})
		req, _ := http.NewRequest("GET", base+"/", nil)
		if status, _ := getBody(t, inlineClient(t), req); status != http.StatusBadGateway {
			t.Fatalf("%d, want 502", status)
		}
		expectErr(t, errs, "other 502")
	})
	t.Run("101 without an upgrade", func(t *testing.T) {
		up, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
			http.ReadRequest(br)
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		})
		_, base, errs := inlineFront(t, Options{Upstream: up})
		req, _ := http.NewRequest("GET", base+"/", nil)
		if status, _ := getBody(t, inlineClient(t), req); status != http.StatusBadGateway {
			t.Fatalf("%d, want 502", status)
		}
		expectErr(t, errs, "other 502")
	})
}

func TestInlineCloseIdleConnections(t *testing.T) {
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	p, base, _ := inlineFront(t, Options{Upstream: up})
	c := inlineClient(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", base+"/", nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if n := p.inlineIdle(); n < 1 {
		t.Fatalf("%d idle, want at least 1", n)
	}
	p.CloseIdleConnections()
	if n := p.inlineIdle(); n != 0 {
		t.Errorf("%d idle after CloseIdleConnections", n)
	}
	eventually(t, "upstream connections closed", func() bool { return cc.closed.Load() == cc.opened.Load() })

	// Still pooling after that.
	req, _ := http.NewRequest("GET", base+"/", nil)
	getBody(t, c, req)
	if n := p.inlineIdle(); n != 1 {
		t.Errorf("%d idle after another GET, want 1", n)
	}

	// A retired backend keeps nothing, not even what comes back later.
	old, err := p.Switch(up)
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	if n := old.transport.pool.idleCount(); n != 0 {
		t.Errorf("%d idle in the closed backend", n)
	}
	uc := &upConn{c: nopConn{}}
	if old.transport.pool.give(uc) {
		t.Error("a closed backend's pool took a connection")
	}
}

type nopConn struct{ net.Conn }

func TestInlineIdleTimeoutClosesConnections(t *testing.T) {
	up, cc := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	p, base, _ := inlineFront(t, Options{Upstream: up, IdleConnTimeout: 50 * time.Millisecond})
	c := inlineClient(t)
	for range 2 {
		req, _ := http.NewRequest("GET", base+"/", nil)
		getBody(t, c, req)
		eventually(t, "idle connection reaped", func() bool { return p.inlineIdle() == 0 && cc.closed.Load() == cc.opened.Load() })
	}
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (one per request, each reaped)", n)
	}
}
