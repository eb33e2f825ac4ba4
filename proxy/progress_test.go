package proxy_test

// Progress timeouts (progress.go, issue 13 item 4): transfers that keep moving run longer
// than the timeouts; each kind of stall is cut, reported, and leaves nothing behind.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"
)

// stallTimeout is every progress timeout in the tests of stalls; movingTimeout in those of
// transfers that keep moving, which last twice as long and never pause for more than a
// twentieth of it (a wide margin: the tests share two cores with much else).
const (
	stallTimeout  = time.Second
	movingTimeout = 2 * time.Second
	step          = movingTimeout / 20
	steps         = 40
)

func progressOptions(up string, timeout time.Duration) proxy.Options {
	return proxy.Options{
		Upstream:            mustParse(up),
		SendTimeout:         timeout,
		ClientBodyTimeout:   timeout,
		ReadTimeout:         timeout,
		UpstreamSendTimeout: timeout,
		UpgradeIdleTimeout:  timeout,
	}
}

// upstreamConns serves h as an upstream and counts its open connections.
func upstreamConns(t *testing.T, h http.Handler) (url string, open *atomic.Int64) {
	open = new(atomic.Int64)
	addr := serveOn(t, h, func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	})
	return "http://" + addr, open
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkFreed waits for the upstream connections to be closed and the goroutines to be
// back to what they were before the request.
func checkFreed(t *testing.T, f *front, open *atomic.Int64, goroutines int) {
	t.Helper()
	f.Client.CloseIdleConnections()
	f.Proxy.CloseIdleConnections()
	waitUntil(t, "upstream connections closed", func() bool { return open.Load() == 0 })
	waitGoroutines(t, goroutines)
}

func TestProgressTimeoutsLetMovingTransfersRun(t *testing.T) {
	// Streams a line a step.
	streaming := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			io.Copy(io.Discard, r.Body)
		}
		rc := http.NewResponseController(w)
		for i := range steps {
			fmt.Fprintf(w, "line %d\n", i)
			rc.Flush()
			time.Sleep(step)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/stream", streaming)
	mux.Handle("/", standin.Handler())
	up, _ := upstreamConns(t, mux)

	for _, method := range []string{"GET", "POST"} { // the inline path and the Transport's
		t.Run("download "+method, func(t *testing.T) {
			t.Parallel()
			f := startFront(t, progressOptions(up, movingTimeout), true)
			var upload io.Reader
			if method == "POST" {
				upload = strings.NewReader("x")
			}
			req, _ := http.NewRequest(method, f.URL+"/stream", upload)
			resp, body := f.do(t, req)
			if resp.StatusCode != 200 || strings.Count(string(body), "\n") != steps {
				t.Fatalf("%d, %d lines; want 200 and %d", resp.StatusCode, strings.Count(string(body), "\n"), steps)
			}
			checkReason(t, f, "", 200)
		})
	}
	t.Run("upload", func(t *testing.T) {
		t.Parallel()
		f := startFront(t, progressOptions(up, movingTimeout), true)
		pr, pw := io.Pipe()
		go func() {
			for range steps {
				pw.Write([]byte(strings.Repeat("u", 1000)))
				time.Sleep(step)
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", f.URL+"/echo", pr)
		resp, body := f.do(t, req)
		if resp.StatusCode != 200 || len(body) != steps*1000 {
			t.Fatalf("%d, %d bytes echoed; want 200 and %d", resp.StatusCode, len(body), steps*1000)
		}
		checkReason(t, f, "", 200)
	})
	t.Run("slow reader", func(t *testing.T) {
		t.Parallel()
		f := startFront(t, progressOptions(up, movingTimeout), true)
		// 16 MiB, more than the socket buffers hold, read 512 KiB per step (32 steps).
		resp, err := f.Client.Post(f.URL+"/echo", "application/octet-stream", strings.NewReader(strings.Repeat("r", 16<<20)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n := int64(0)
		for {
			m, err := io.CopyN(io.Discard, resp.Body, 512<<10)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
			time.Sleep(step)
		}
		if n != 16<<20 {
			t.Fatalf("read %d bytes, want %d", n, 16<<20)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		f := startFront(t, progressOptions(up, movingTimeout), true)
		ws, err := websocket.Dial("ws://"+f.Addr+"/ws", "", f.URL+"/")
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.SetDeadline(time.Now().Add(waitLimit))
		for i := range steps {
			msg := fmt.Sprintf("message %d", i)
			var got string
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("echo %d: %q, %v", i, got, err)
			}
			time.Sleep(step)
		}
	})
}

// stallingUpstream answers GET and POST /stall with the headers and 64 KiB of the 1e6
// bytes it announced (more than the proxy buffers, so the client gets them), then sends
// nothing until its client (the proxy) goes away.
func stallingUpstream(t *testing.T) (string, *atomic.Int64) {
	never, _ := release(t)
	return upstreamConns(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 64<<10))
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-never:
		}
	}))
}

func TestUpstreamStallMidBodyIsCut(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			up, open := stallingUpstream(t)
			log, logged := captureLog(t)
			opts := progressOptions(up, stallTimeout)
			opts.Logger = log
			f := startFront(t, opts, true)
			goroutines := runtime.NumGoroutine()

			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, method, f.URL+"/stall", nil)
			resp, err := f.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ctx.Err() != nil {
				t.Fatalf("the stalled response was not cut: %v", err)
			}
			if resp.StatusCode != 200 || len(body) != 64<<10 || err == nil {
				t.Fatalf("%d, %d bytes, %v; want 200, the 64 KiB sent, then a cut", resp.StatusCode, len(body), err)
			}
			checkReason(t, f, proxy.ReasonReadTimeout, 200)
			if !strings.Contains(logged.String(), "upstream stopped sending the response body") {
				t.Errorf("no log line for the cut:\n%s", logged.String())
			}
			checkFreed(t, f, open, goroutines)
		})
	}
}

func TestClientThatStopsReadingIsCut(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			returned := make(chan struct{}, 1)
			up, open := upstreamConns(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer func() { returned <- struct{}{} }()
				chunk := make([]byte, 32<<10)
				for range 64 << 20 / len(chunk) { // 64 MiB, far more than the socket buffers
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			}))
			f := startFront(t, progressOptions(up, stallTimeout), true)
			goroutines := runtime.NumGoroutine()

			c, err := net.Dial("tcp", f.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			body := ""
			if method == "POST" {
				body = "Content-Length: 1\r\n\r\nx"
			} else {
				body = "\r\n"
			}
			fmt.Fprintf(c, "%s /big HTTP/1.1\r\nHost: x\r\n%s", method, body)
			// Never read: the proxy must give up on this client.
			x := f.lastExchange(t)
			if x.UpstreamError != proxy.ReasonSendTimeout || x.Status != 200 {
				t.Errorf("drain saw reason %q status %d, want %q 200", x.UpstreamError, x.Status, proxy.ReasonSendTimeout)
			}
			select {
			case <-returned:
			case <-time.After(waitLimit):
				t.Fatal("the upstream handler still writes")
			}
			c.Close()
			checkFreed(t, f, open, goroutines)
		})
	}
}

func TestRequestBodyThatStopsIs408(t *testing.T) {
	up, open := upstreamConns(t, standin.Handler())
	f := startFront(t, progressOptions(up, stallTimeout), true)
	goroutines := runtime.NumGoroutine()

	c, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("b", 1000))
	// ... and nothing more.
	c.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a request body that stopped: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Errorf("answer %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
	}
	checkReason(t, f, proxy.ReasonClientBodyTimeout, http.StatusRequestTimeout)
	c.Close()
	checkFreed(t, f, open, goroutines)
}

func TestUpstreamThatStopsReadingTheRequestIs504(t *testing.T) {
	// A raw upstream: it reads the request head, then nothing until the test has its
	// answer; then it reads on, and must find the proxy's side closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	answered := make(chan struct{})
	upstreamClosed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			upstreamClosed <- err
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			upstreamClosed <- err
			return
		}
		<-answered
		c.SetReadDeadline(time.Now().Add(waitLimit))
		_, err = io.Copy(io.Discard, br)
		upstreamClosed <- err // nil: EOF, the proxy closed it
	}()
	f := startFront(t, progressOptions("http://"+ln.Addr().String(), stallTimeout), true)
	goroutines := runtime.NumGoroutine()

	// 64 MiB, far more than the socket buffers between the proxy and the upstream, sent
	// while the answer is read (the proxy closes before it has all of it).
	const size = 64 << 20
	c, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		chunk := make([]byte, 64<<10)
		for range size / len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("answer %d, want 504", resp.StatusCode)
	}
	checkReason(t, f, proxy.ReasonTimeout, http.StatusGatewayTimeout)
	close(answered)
	if err := <-upstreamClosed; err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the proxy's upstream connection: %v, want it closed", err)
	}
	c.Close()
	var none atomic.Int64
	checkFreed(t, f, &none, goroutines)
}

func TestIdleWebSocketIsClosed(t *testing.T) {
	up, open := upstreamConns(t, standin.Handler())
	f := startFront(t, progressOptions(up, stallTimeout), true)
	goroutines := runtime.NumGoroutine()

	ws, err := websocket.Dial("ws://"+f.Addr+"/ws", "", f.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(waitLimit))
	var got string
	if err := websocket.Message.Receive(ws, &got); err != io.EOF {
		t.Fatalf("idle WebSocket: receive %q, %v; want the proxy to close it (EOF)", got, err)
	}
	checkReason(t, f, proxy.ReasonUpgradeIdleTimeout, http.StatusSwitchingProtocols)
	ws.Close()
	checkFreed(t, f, open, goroutines)
}

func mustParse(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// BenchmarkProxyHotPathWithProgressTimeouts is BenchmarkProxyHotPath with the progress
// timeouts at their defaults (60s), as the binary runs: their cost per request.
func BenchmarkProxyHotPathWithProgressTimeouts(b *testing.B) {
	up := upstreamURL(b, standin.Handler())
	opts := progressOptions(up.String(), 60*time.Second)
	opts.UpgradeIdleTimeout = time.Hour
	p, err := proxy.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.CloseIdleConnections)
	addr := serveAsBinary(b, drain.New(drain.Options{}).Handler(p))
	benchmarkGET(b, "http://"+addr+"/")
}

// Over HTTP/2 the send timeout resets the stream of a client that stops reading, and the
// access log says why. (net/http's server; tlsfront's x/net one behaved the same when
// tried, but its API is deprecated.)
func TestHTTP2ClientThatStopsReadingIsCut(t *testing.T) {
	returned := make(chan struct{}, 1)
	up, open := upstreamConns(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { returned <- struct{}{} }()
		chunk := make([]byte, 32<<10)
		for range 64 << 20 / len(chunk) { // far beyond the client's flow-control window
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	p, err := proxy.New(progressOptions(up, stallTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	d := drain.New(drain.Options{})
	seen := make(chan drain.Exchange, 4)
	d.Observe(exchanges(seen))
	ts := httptest.NewUnstartedServer(d.Handler(p))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	client := ts.Client()
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true

	resp, err := client.Get(ts.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", resp.Proto)
	}
	// Never read the body.
	select {
	case x := <-seen:
		if x.UpstreamError != proxy.ReasonSendTimeout {
			t.Errorf("drain saw reason %q (err %v), want %q", x.UpstreamError, x.Err, proxy.ReasonSendTimeout)
		}
	case <-time.After(waitLimit):
		t.Fatal("the HTTP/2 stream of a client that stopped reading was not cut")
	}
	select {
	case <-returned:
	case <-time.After(waitLimit):
		t.Fatal("the upstream handler still writes")
	}
	resp.Body.Close()
	waitUntil(t, "upstream connections closed", func() bool {
		p.CloseIdleConnections()
		return open.Load() == 0
	})
}
