package h1serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// stateLog records the ConnState calls of one server.
type stateLog struct {
	mu  sync.Mutex
	got []http.ConnState
}

func (l *stateLog) hook(_ net.Conn, s http.ConnState) {
	l.mu.Lock()
	l.got = append(l.got, s)
	l.mu.Unlock()
}

func (l *stateLog) states() []http.ConnState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// waitStates waits until the log holds n states.
func (l *stateLog) waitStates(t *testing.T, n int) []http.ConnState {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s := l.states(); len(s) >= n {
			return s
		}
	}
	return l.states()
}

// The connection states h1serve reports are net/http's, in the same order, for a
// keep-alive connection with two requests and for one whose handler hijacks it.
func TestConnStateAsNetHTTP(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hijack" {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		io.WriteString(w, "ok")
	})
	scripts := map[string][]string{
		"keep-alive": {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		"hijack":     {"GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	want := map[string]int{"keep-alive": 6, "hijack": 3}
	for name, script := range scripts {
		t.Run(name, func(t *testing.T) {
			var std, own stateLog
			stdSrv := &http.Server{Handler: handler, ConnState: std.hook}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go stdSrv.Serve(ln)
			t.Cleanup(func() { stdSrv.Close() })
			for _, addr := range []string{ln.Addr().String(), serve(t, &Server{Handler: handler, ConnState: own.hook})} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				for _, req := range script {
					io.WriteString(c, req)
					if resp, err := http.ReadResponse(br, nil); err == nil {
						io.ReadAll(resp.Body)
					}
				}
				c.Close()
			}
			s, o := std.waitStates(t, want[name]), own.waitStates(t, want[name])
			if !slices.Equal(s, o) {
				t.Errorf("states: net/http %v, h1serve %v", s, o)
			}
		})
	}
}

// A connection turns StateActive as soon as the first bytes of a request arrive, before
// its head is complete (net/http waits for the head): the deliberate difference that
// keeps a drain or a connection limit from closing it as idle meanwhile.
func TestActiveOnFirstBytes(t *testing.T) {
	var log stateLog
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ConnState: log.hook})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHo")
	if got := log.waitStates(t, 2); !slices.Equal(got, []http.ConnState{http.StateNew, http.StateActive}) {
		t.Fatalf("states with half a head sent: %v, want [new active]", got)
	}
	io.WriteString(c, "st: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Fatal(err)
	}
}

// BaseContext and ConnContext give the requests' contexts their values, as in net/http.
func TestConnContext(t *testing.T) {
	type key string
	seen := make(chan [2]any, 1)
	var base net.Listener
	addr := serve(t, &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen <- [2]any{r.Context().Value(key("base")), r.Context().Value(key("conn"))}
		}),
		BaseContext: func(ln net.Listener) context.Context {
			base = ln
			return context.WithValue(context.Background(), key("base"), "b")
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, key("conn"), c.RemoteAddr().String())
		},
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := <-seen; got[0] != "b" || got[1] != c.LocalAddr().String() {
		t.Errorf("request context values %v, want [b %s]", got, c.LocalAddr())
	}
	if base == nil || base.Addr().String() != addr {
		t.Errorf("BaseContext got listener %v", base)
	}
}

// ReadTimeout bounds the whole request from its first byte (a body that stalls fails
// the handler's read); WriteTimeout the response from the end of the head (a handler
// that answers late writes nothing).
func TestReadAndWriteTimeout(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		bodyErr := make(chan error, 1)
		// A longer head timeout: the body must be cut by ReadTimeout, not by it.
		addr := serve(t, &Server{ReadTimeout: 200 * time.Millisecond, ReadHeaderTimeout: time.Minute, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			bodyErr <- err
		})})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
		select {
		case err := <-bodyErr:
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("body read: %v, want a timeout", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stalled body outlived ReadTimeout")
		}
	})
	t.Run("write", func(t *testing.T) {
		addr := serve(t, &Server{WriteTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, "late")
		})})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || strings.Contains(string(b), "late") {
			t.Errorf("got %q, %v; want the connection closed without the late answer", b, err)
		}
	})
}

// Close closes the connections being served but not one a handler hijacked, even while
// that handler still runs (ReverseProxy copies an upgraded connection inside ServeHTTP).
func TestCloseLeavesHijackedConnections(t *testing.T) {
	hijacked, release := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		close(hijacked)
		<-release
		brw.WriteString("still here")
		brw.Flush()
	})}
	addr := serve(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-hijacked
	s.Close()
	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(c); string(b) != "still here" {
		t.Errorf("the hijacked connection read %q after Close, want the handler's bytes", b)
	}
}

// With CancelOnFIN a client's FIN ends its running request's context, as net/http's
// background read does (drainproxy's proxy then asks the kernel whether the client
// half-closed or left); without it, TestHalfCloseGetsAnswer.
func TestCancelOnFIN(t *testing.T) {
	canceled := make(chan bool, 1)
	addr := serve(t, &Server{CancelOnFIN: true, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- true
		case <-time.After(5 * time.Second):
			canceled <- false
		}
	})})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // past WatchDelay
	c.(*net.TCPConn).CloseWrite()
	if !<-canceled {
		t.Error("the FIN did not end the request's context")
	}
}

// Requests find an *http.Server under http.ServerContextKey, as under net/http:
// httputil.ReverseProxy aborts a response whose upstream body broke off only then.
func TestServerContextKey(t *testing.T) {
	seen := make(chan bool, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
		seen <- ok && srv != nil && srv.Handler != nil
	})})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !<-seen {
		t.Error("no *http.Server with the handler under http.ServerContextKey")
	}
}

// A plain HTTP request to a TLS listener gets net/http's 400, not a silent close.
func TestPlainHTTPToTLS(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil) // for its certificate only
	ts.StartTLS()
	ts.Close()
	var got []string
	for _, srv := range []interface{ Serve(net.Listener) error }{
		&http.Server{Handler: http.NotFoundHandler(), ErrorLog: log.New(io.Discard, "", 0)},
		&Server{Handler: http.NotFoundHandler()},
	} {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", ts.TLS)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		ln.Close()
		got = append(got, string(b))
	}
	if got[0] != got[1] || !strings.HasPrefix(got[1], "HTTP/1.0 400") {
		t.Errorf("net/http answered %q, h1serve %q", got[0], got[1])
	}
}
