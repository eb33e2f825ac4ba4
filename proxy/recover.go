package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
)

// headerGuard is the ResponseWriter the ReverseProxy writes to: it remembers whether a
// final response head went out, which decides how a panic is answered.
//
// It also serializes writes and flushes: the ReverseProxy flushes from a timer goroutine
// of its own while its copy loop writes (under a lock of its own), and the cut-short
// watch (response.go) flushes from the copy loop, outside that lock; net/http's
// ResponseWriter takes one call at a time.
//
// And it passes at most max1xx informational heads on: the ReverseProxy forwards each 1xx
// from its own trace hook as it arrives, before the round trip's bound (fallback.go) ends
// the exchange, which left thousands of "100 Continue" to reach the client first.
type headerGuard struct {
	http.ResponseWriter
	mu   sync.Mutex
	sent bool
	n1xx int
}

func (g *headerGuard) WriteHeader(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if code >= 200 || code == http.StatusSwitchingProtocols {
		g.sent = true
	} else if g.n1xx++; g.n1xx > max1xx {
		return
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *headerGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sent = true
	return g.ResponseWriter.Write(p)
}

// FlushError lets http.ResponseController (ReverseProxy's streaming) flush.
func (g *headerGuard) FlushError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sent = true
	return http.NewResponseController(g.ResponseWriter).Flush()
}

// Hijack hands the connection over for an upgrade; nothing can be answered after it.
func (g *headerGuard) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sent = true
	return http.NewResponseController(g.ResponseWriter).Hijack()
}

func (g *headerGuard) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// RecordUpstreamError passes the error on to the wrapper's ErrorRecorder, if any.
func (g *headerGuard) RecordUpstreamError(reason string, status int, err error) {
	if rec := recorderOf(g.ResponseWriter); rec != nil {
		rec.RecordUpstreamError(reason, status, err)
	}
}

// recoverRequest, deferred around a request, turns a panic into an answer: logged at
// error level with its stack, then a 502 if no response head went out yet, or else the
// connection closed, the only way to tell an HTTP/1 client its response is cut short.
// http.ErrAbortHandler is how ReverseProxy itself cuts a response short: passed on.
func (p *Proxy) recoverRequest(target string, g *headerGuard, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	g.mu.Lock()
	sent := g.sent
	g.mu.Unlock()
	p.log.Error("panic while proxying a request", "upstream", target, "method", r.Method,
		"path", r.URL.Path, "panic", fmt.Sprint(v), "head_sent", sent, "stack", string(debug.Stack()))
	if sent {
		panic(http.ErrAbortHandler)
	}
	g.RecordUpstreamError(ReasonOther, http.StatusBadGateway, fmt.Errorf("proxy: panic: %v", v))
	h := g.Header()
	clear(h) // the upstream's, copied before the panic
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	g.WriteHeader(http.StatusBadGateway)
	io.WriteString(g, errorBody(http.StatusBadGateway, ReasonOther))
}
