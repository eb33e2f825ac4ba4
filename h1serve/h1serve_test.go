package h1serve

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve starts s on a loopback listener and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.ErrorLog == nil {
		s.ErrorLog = log.New(testWriter{t}, "", 0)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// testWriter fails the test on any log line: a warning in a log is a failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Errorf("unexpected log: %s", p)
	return len(p), nil
}

// A keep-alive connection waiting for its next request holds neither buffer.
func TestIdleConnectionHoldsNoBuffers(t *testing.T) {
	type held struct{ reader, writer bool }
	var mu sync.Mutex
	var waits []held
	s := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		idleHook: func(reader, writer bool) {
			mu.Lock()
			waits = append(waits, held{reader, writer})
			mu.Unlock()
		},
	}
	addr := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// the third wait begins after the third answer; wait for it by asking once more
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	io.Copy(io.Discard, br)
	mu.Lock()
	defer mu.Unlock()
	if len(waits) < 4 {
		t.Fatalf("%d idle waits, want 4", len(waits))
	}
	for i, h := range waits {
		if h.reader || h.writer {
			t.Errorf("idle wait %d holds a buffer: reader %v, writer %v", i, h.reader, h.writer)
		}
	}
}

// A client that resets its connection while its request runs cancels the request's
// context: the watch notices, with no background read for requests that end sooner.
func TestClientResetCancelsRunningRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delay  time.Duration
		cancel bool
	}{
		{"watched", 0, true},
		{"watch off", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{})
			cancelled := make(chan bool, 1)
			s := &Server{WatchDelay: tc.delay, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-r.Context().Done():
					cancelled <- true
				case <-time.After(2 * time.Second):
					cancelled <- false
				}
			})}
			addr := serve(t, s)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			<-started
			time.Sleep(50 * time.Millisecond) // past the watch delay
			c.(*net.TCPConn).SetLinger(0)
			c.Close() // a reset
			if got := <-cancelled; got != tc.cancel {
				t.Errorf("request cancelled: %v, want %v", got, tc.cancel)
			}
		})
	}
}

// A client that half-closes after its request gets the whole answer, from a handler
// whose context stayed live.
func TestHalfCloseGetsAnswer(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond) // past the watch delay: the watch sees the FIN
		if err := r.Context().Err(); err != nil {
			http.Error(w, "cancelled", 500)
			return
		}
		io.WriteString(w, "answer")
	})}
	addr := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(b), "\r\n\r\nanswer") {
		t.Errorf("got %q, want a 200 with the answer", b)
	}
}

// ResponseController finds every method ReverseProxy uses.
func TestResponseController(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for name, err := range map[string]error{
			"SetReadDeadline":  rc.SetReadDeadline(time.Now().Add(time.Minute)),
			"SetWriteDeadline": rc.SetWriteDeadline(time.Now().Add(time.Minute)),
			"EnableFullDuplex": rc.EnableFullDuplex(),
		} {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		io.WriteString(w, "a")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
	})}
	addr := serve(t, s)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "a" {
		t.Errorf("body %q", b)
	}
}

// httputil.ReverseProxy served by h1serve: a plain request, 100-continue, and an
// upgrade whose bytes flow both ways through the hijacked connection.
func TestReverseProxy(t *testing.T) {
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo " + line)
			brw.Flush()
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "up "+r.Method+" "+string(b))
	}), ErrorLog: log.New(testWriter{t}, "", 0)}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go upstream.Serve(uln)
	t.Cleanup(func() { upstream.Close() })
	u, _ := url.Parse("http://" + uln.Addr().String())
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }}
	addr := serve(t, &Server{Handler: rp})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	read := func() *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	resp := read()
	if b, _ := io.ReadAll(resp.Body); string(b) != "up POST abc" {
		t.Errorf("proxied body %q", b)
	}

	io.WriteString(c, "POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if resp := read(); resp.StatusCode != http.StatusContinue {
		t.Fatalf("status %d, want 100 Continue first", resp.StatusCode)
	}
	io.WriteString(c, "body")
	resp = read()
	if b, _ := io.ReadAll(resp.Body); string(b) != "up POST body" {
		t.Errorf("proxied body after 100-continue %q", b)
	}

	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if resp := read(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	io.WriteString(c, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Errorf("through the upgrade: %q, %v", line, err)
	}
}

// IdleTimeout closes a keep-alive connection that waits too long for its next request;
// ReadHeaderTimeout one whose head does not complete in time. Neither answers.
func TestTimeouts(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	for _, tc := range []struct {
		name   string
		srv    *Server
		stream string
	}{
		{"idle", &Server{Handler: handler, IdleTimeout: 100 * time.Millisecond}, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"head", &Server{Handler: handler, ReadHeaderTimeout: 100 * time.Millisecond}, "GET / HTTP/1.1\r\nHost: x\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, tc.srv)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.stream)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			b, err := io.ReadAll(c) // the server closes: EOF
			if err != nil {
				t.Fatalf("after %v: %v (want the server to close)", time.Since(start), err)
			}
			if tc.name == "head" && len(b) != 0 {
				t.Errorf("answered a timed-out head: %q", b)
			}
		})
	}
}

// A TLS connection is served after its handshake, and the request sees the TLS state.
func TestTLS(t *testing.T) {
	seenTLS := make(chan bool, 1)
	ts := httptest.NewUnstartedServer(nil) // for its certificate only
	ts.StartTLS()
	ts.Close()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenTLS <- r.TLS != nil && r.TLS.HandshakeComplete
		io.WriteString(w, "ok")
	})}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ts.TLS)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	client := ts.Client()
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !<-seenTLS {
		t.Error("the handler saw no completed TLS state")
	}
}
