package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/standin"
)

// rawConn is an HTTP/1.1 client on one TCP connection that never retries: a request
// written on it either gets its response or is counted lost. Go's http.Transport would
// silently resend an idempotent request after a reset, hiding exactly what these tests
// look for.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(addr string, timeout time.Duration) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReader(c)}, nil
}

// do sends one request and reads the whole response. It returns the response (body
// read) or the error that lost the request.
func (r *rawConn) do(method, path string) (*http.Response, []byte, error) {
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: drain.test\r\nContent-Length: 0\r\n\r\n", method, path)
	if _, err := io.WriteString(r.c, req); err != nil {
		return nil, nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	return resp, body, nil
}

func (r *rawConn) Close() error { return r.c.Close() }

// loadResult counts what keep-alive clients saw during a drain.
type loadResult struct {
	ok       atomic.Int64 // responses received
	lost     atomic.Int64 // requests sent on an established connection that got no response
	bad      atomic.Int64 // responses other than 200
	refused  atomic.Int64 // new connections not accepted (listener stopping or closed): counted apart
	lastResp atomic.Int64 // unix nanoseconds of the latest response
	firstErr atomic.Value
}

// keepAliveClients runs n clients that send POST requests back to back (POST: never
// idempotent, so nobody could retry it) on keep-alive connections until stop is closed or
// the proxy refuses new connections. A client whose response says "Connection: close"
// opens a new connection for its next request.
func keepAliveClients(addr string, n int, path string, stop <-chan struct{}, res *loadResult) *sync.WaitGroup {
	dial := func() (*rawConn, error) { return dialRaw(addr, 300*time.Millisecond) }
	return keepAliveClientsDial(dial, n, path, stop, res)
}

// keepAliveClientsDial is keepAliveClients with connections from dial (e.g. over TLS).
func keepAliveClientsDial(dial func() (*rawConn, error), n int, path string, stop <-chan struct{}, res *loadResult) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rc *rawConn
			defer func() {
				if rc != nil {
					rc.Close()
				}
			}()
			for sent := 0; sent < 1_000_000; sent++ { // bounded; stop ends it long before
				select {
				case <-stop:
					return
				default:
				}
				if rc == nil {
					var err error
					if rc, err = dial(); err != nil {
						res.refused.Add(1)
						return // the listener is gone: this client is done
					}
				}
				resp, _, err := rc.do("POST", path)
				if err != nil {
					res.lost.Add(1)
					res.firstErr.CompareAndSwap(nil, err)
					rc.Close()
					rc = nil
					continue
				}
				res.ok.Add(1)
				res.lastResp.Store(time.Now().UnixNano())
				if resp.StatusCode != http.StatusOK {
					res.bad.Add(1)
				}
				if resp.Close {
					rc.Close()
					rc = nil
				}
			}
		}()
	}
	return &wg
}

// drainUpstream is the stand-in app plus POST / and POST /slow?d= for the load clients.
// Each /slow request is announced on arrived once the upstream has it.
func drainUpstream(t testing.TB) (url string, arrived <-chan struct{}) {
	slow := make(chan struct{}, 1000)
	mux := http.NewServeMux()
	mux.Handle("/", standin.Handler())
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, standin.Hello) })
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case slow <- struct{}{}:
		default:
		}
		select {
		case <-time.After(d):
			io.WriteString(w, standin.Hello)
		case <-r.Context().Done():
		}
	})
	return "http://" + serveUpstream(t, mux), slow
}

// awaitArrivals waits until n slow requests reached the upstream.
func awaitArrivals(t testing.TB, arrived <-chan struct{}, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case <-arrived:
		case <-timeout:
			t.Fatalf("fewer than %d slow requests reached the upstream", n)
		}
	}
}

// (a) 20 keep-alive clients sending continuously and 10 two-second requests, all in flight
// at SIGTERM: no request on an established connection fails, the long ones answer 200,
// and the process exits well before the grace deadline.
func TestDrainLosesNothingUnderLoad(t *testing.T) {
	up, arrived := drainUpstream(t)
	p := startProxy(t, "-upstream", up, "-grace", "20s")

	stop := make(chan struct{})
	var res loadResult
	clients := keepAliveClients(p.Addr, 20, "/", stop, &res)
	t.Cleanup(func() { close(stop); clients.Wait() })

	longStatus := slowPosts(t, p.Addr, 10, 2*time.Second)
	// Let the load run and every long request reach the upstream before the signal.
	awaitArrivals(t, arrived, 10)
	waitFor(t, 5*time.Second, func() bool { return res.ok.Load() > 500 })

	p.Signal(syscall.SIGTERM)
	code := p.Wait(15 * time.Second)
	for range 10 {
		if err := <-longStatus; err != nil {
			t.Errorf("long request: %v", err)
		}
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if n := res.lost.Load(); n != 0 {
		t.Errorf("%d requests on established connections got no response (first: %v); %d answered", n, res.firstErr.Load(), res.ok.Load())
	}
	if n := res.bad.Load(); n != 0 {
		t.Errorf("%d responses were not 200", n)
	}
	sum := p.WaitLog("drain complete", time.Second)
	if sum["aborted"] != 0.0 || sum["drained"].(float64) < 10 {
		t.Errorf("summary %v: want aborted=0 and drained>=10", sum)
	}
	t.Logf("answered %d, lost %d, new connections refused %d, summary %v",
		res.ok.Load(), res.lost.Load(), res.refused.Load(), sum)
}

// (b) A WebSocket open at SIGTERM keeps working until its client closes it; the drain
// waits for it and exits 0.
func TestDrainWaitsForWebSocket(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, "-upstream", up, "-grace", "20s")
	ws := dialWS(t, p)

	p.Signal(syscall.SIGTERM)
	p.WaitLog("stopped accepting", 5*time.Second)
	for i := range 3 {
		echoWS(t, ws, fmt.Sprintf("after SIGTERM %d", i))
	}
	select {
	case <-p.Exited():
		t.Fatal("drainproxy exited while a WebSocket was open")
	default:
	}
	ws.Close()
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// (b) A WebSocket still open at the grace deadline is closed and counted aborted; the exit
// code is 1.
func TestDrainAbortsWebSocketAtDeadline(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, "-upstream", up, "-grace", "1s")
	ws := dialWS(t, p)
	echoWS(t, ws, "before")

	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	sum := p.WaitLog("drain complete", time.Second)
	if sum["aborted"] != 1.0 {
		t.Fatalf("summary %v: want aborted=1", sum)
	}
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ws.Read(make([]byte, 16)); err == nil {
		t.Fatal("the WebSocket still reads after the deadline closed it")
	}
}

func dialWS(t *testing.T, p *proc) *websocket.Conn {
	t.Helper()
	ws, err := websocket.Dial("ws://"+p.Addr+"/ws", "", "http://drain.test/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func echoWS(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	if err := websocket.Message.Send(ws, msg); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
		t.Fatalf("echo of %q: got %q, %v", msg, got, err)
	}
}

// (c) A second SIGTERM during the wait forces the exit, with code 1.
func TestSecondSignalForces(t *testing.T) {
	up, arrived := drainUpstream(t)
	p := startProxy(t, "-upstream", up, "-grace", "60s")
	rc, err := dialRaw(p.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	errc := make(chan error, 1)
	go func() { _, _, err := rc.do("POST", "/slow?d=60s"); errc <- err }()
	awaitArrivals(t, arrived, 1)

	p.Signal(syscall.SIGTERM)
	p.WaitLog("stopped accepting", 5*time.Second)
	time.Sleep(sigtrap.Coalesce) // sooner, the second SIGTERM counts as the same delivery
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if err := <-errc; err == nil {
		t.Fatal("the 60s request got an answer; it should have been cut by the forced exit")
	}
	if sum := p.WaitLog("drain complete", time.Second); sum["forced"] != true {
		t.Fatalf("summary %v: want forced=true", sum)
	}
}

// (d) During the drain delay new connections are still served, and every response asks
// the client to close its connection.
func TestDrainDelayKeepsServingWithConnectionClose(t *testing.T) {
	up, _ := drainUpstream(t)
	p := startProxy(t, "-upstream", up, "-drain-delay", "3s", "-grace", "5s")
	before, err := dialRaw(p.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if resp, _, err := before.do("GET", "/"); err != nil || resp.Close {
		t.Fatalf("before the drain: %v, close=%v; want a keep-alive answer", err, resp != nil && resp.Close)
	}

	p.Signal(syscall.SIGTERM)
	p.WaitLog("drain started", 5*time.Second)
	// The connection opened before the signal: its next answer carries Connection: close.
	resp, body, err := before.do("GET", "/")
	if err != nil || resp.StatusCode != 200 || string(body) != standin.Hello || !resp.Close {
		t.Fatalf("old connection during the delay: %v %v; want 200 with Connection: close", resp, err)
	}
	// A new connection during the delay is accepted and served, also with Connection: close.
	fresh, err := dialRaw(p.Addr, time.Second)
	if err != nil {
		t.Fatalf("a new connection during the delay was refused: %v", err)
	}
	defer fresh.Close()
	resp, _, err = fresh.do("GET", "/")
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("new connection during the delay: %v %v; want 200 with Connection: close", resp, err)
	}
	select {
	case <-p.Exited():
		t.Fatal("exited during the delay")
	default:
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// (e) SIGTERM with nothing in flight and no delay exits at once, not after the grace period.
func TestIdleDrainExitsPromptly(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, "-upstream", up, "-grace", "60s")
	// A keep-alive connection that sits idle must not hold the exit up to the grace period.
	rc, err := dialRaw(p.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, _, err := rc.do("GET", "/"); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	sum := p.WaitLog("drain complete", time.Second)
	took, err := time.ParseDuration(fmt.Sprint(sum["took"]))
	if err != nil {
		t.Fatalf("summary took=%v: %v", sum["took"], err)
	}
	if took >= 60*time.Second {
		t.Fatalf("the drain took %v: it waited out the grace period", took)
	}
}

// A signal during start-up, before ready, still ends in a clean exit.
func TestSignalBeforeReadyExitsCleanly(t *testing.T) {
	up := startUpstream(t)
	p := launch(t, "-upstream", up)
	p.WaitLog("drainproxy starting", 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
}

// waitFor polls cond (a test helper: the product never polls) until it holds.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
