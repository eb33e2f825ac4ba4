package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// reuseWait bounds how long a request waits for the Transport's read loop to reach an idle
// connection it was handed.
const reuseWait = time.Second

// The http.Transport path (request bodies, upgrades, Expect) has the same duty as the
// inline one: a response must never reach a client it was not for. The Transport drops an
// idle connection that receives bytes, but only once its read loop has run: a request that
// takes the connection first (a busy machine) reads the bytes after the last response, or
// what sat in the Transport's buffer, as its own answer. And it keeps connections whose
// framing is doubtful (both Content-Length and Transfer-Encoding). guardedConn closes that
// gap from below: a reused connection is handed to a request only once the read loop is
// blocked reading the socket (its buffer was empty) and the socket itself is quiet; a
// connection whose last response head was doubtful is closed instead. The Transport then
// sends the request on a new connection: nothing was written on the old one, and
// fallbackRoundTrip makes a request body replayable for exactly that case.

// guardedConn is an upstream connection of the http.Transport path (plain HTTP or a unix
// socket).
type guardedConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection is no socket

	mu      sync.Mutex
	cond    sync.Cond // signals reading or closed to a waiting reuse
	reading bool      // the Transport's read loop is blocked in Read
	closed  bool
	waiting atomic.Int32

	// The response head being read for the current request, recorded for reusableHead.
	written   bool // a byte of the current request went out (since gotConn)
	recording bool
	headLeft  int64
	head      []byte
	doomed    bool // the last response's framing was doubtful: never reuse

	// Stray detection (stray.go): between the end of a response and the next gotConn the
	// connection expects nothing, and bytes read then are a stray.
	guard     *strayGuard // set by the first gotConn
	expecting bool
	strayed   bool  // reported once
	answered  bool  // a byte of the response was read (since gotConn)
	reads     int64 // Reads that returned bytes
	// reads when exchangeDone ran; -1 while expecting. The Transport closing a pooled
	// connection without a Read since is its read loop finding bytes it had buffered
	// after the response: StrayUnrequested.
	readsAtDone int64
	ownClose    bool // the guard closed it
	watchEarly  bool // a reused connection, no Expect: a write after answered is StrayEarly
}

func newGuardedConn(c net.Conn) *guardedConn {
	g := &guardedConn{Conn: c, readsAtDone: -1}
	g.cond.L = &g.mu
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			g.raw = raw
		}
	}
	return g
}

func (g *guardedConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	g.reading = true
	if g.waiting.Load() > 0 {
		g.cond.Broadcast()
	}
	g.mu.Unlock()
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	g.reading = false
	if n > 0 && !g.expecting && g.guard != nil && !g.strayed && !is408(p[:min(n, len("HTTP/1.1 408"))]) {
		// The Transport's read loop closes the connection itself; the stray is counted.
		g.strayed = true
		guard, what := g.guard, fmt.Sprintf("%q", p[:min(n, 16)])
		g.mu.Unlock()
		guard.report(strayIdle, "bytes on an idle connection: "+what)
		g.mu.Lock()
	}
	if n > 0 {
		g.answered = true
		g.reads++
	}
	if g.recording && n > 0 {
		take := int64(n)
		if take > g.headLeft {
			take = g.headLeft
		}
		g.head = append(g.head, p[:take]...)
		g.headLeft -= take
	}
	g.mu.Unlock()
	return n, err
}

func (g *guardedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	early := g.watchEarly && g.answered && !g.strayed
	if early {
		g.strayed = true
	}
	guard := g.guard
	g.mu.Unlock()
	if early {
		// What this write carries had not been sent, and a response was already read:
		// the upstream answered a request it had not seen in full, or sent a stray.
		guard.report(strayEarly, "a response began before the request was fully written")
	}
	n, err := g.Conn.Write(p)
	if n > 0 {
		g.mu.Lock()
		g.written = true
		g.mu.Unlock()
	}
	return n, err
}

// unsent reports whether nothing of the current request was written.
func (g *guardedConn) unsent() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.written
}

func (g *guardedConn) Close() error {
	g.mu.Lock()
	unrequested := !g.closed && !g.ownClose && !g.expecting && g.guard != nil && !g.strayed &&
		!g.reading && g.readsAtDone >= 0 && g.reads == g.readsAtDone && g.guard.closing.Load() == 0
	if unrequested {
		// The Transport calls Close holding its connection's lock, which the quarantine's
		// CloseIdleConnections takes: the next request reports it (flushPending).
		g.strayed = true
		g.guard.deferReport(strayUnrequested)
	}
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
	return g.Conn.Close()
}

// gotConn runs when the Transport hands the connection to a request, before the request
// is written. It closes a reused connection that may hold another response's bytes, or
// whose upstream is quarantined, and starts recording the response head.
func (g *guardedConn) gotConn(reused bool, maxHead int64, guard *strayGuard, watchEarly bool) {
	g.mu.Lock()
	g.guard = guard
	if reused && !g.closed && guard.quarantined() {
		g.ownClose = true
		g.mu.Unlock()
		g.Close()
		g.mu.Lock()
	}
	if reused && !g.closed {
		timedOut := false
		if !g.reading {
			// The read loop gets there in microseconds; a bound all the same, after
			// which the connection is given up (the request goes to a new one).
			g.waiting.Add(1)
			timer := time.AfterFunc(reuseWait, func() {
				g.mu.Lock()
				timedOut = true
				g.cond.Broadcast()
				g.mu.Unlock()
			})
			for !g.reading && !g.closed && !timedOut {
				g.cond.Wait()
			}
			timer.Stop()
			g.waiting.Add(-1)
		}
		state := idleQuiet
		if !g.closed && !timedOut && !g.doomed {
			state = socketState(g.raw)
		}
		if state == idleBytes && !g.strayed {
			g.strayed = true
			g.mu.Unlock()
			guard.report(strayIdle, "bytes on an idle connection")
			g.mu.Lock()
		}
		if !g.closed && (timedOut || g.doomed || state != idleQuiet) {
			g.ownClose = true
			g.mu.Unlock()
			g.Close()
			g.mu.Lock()
		}
	}
	g.written = false
	g.expecting = true
	g.readsAtDone = -1
	g.answered = false
	g.watchEarly = reused && watchEarly
	g.recording, g.headLeft, g.head = true, maxHead, g.head[:0]
	g.mu.Unlock()
}

// exchangeDone marks the end of the current response, when the Transport has pooled the
// connection and before its read loop looks for more: bytes read from now until the next
// gotConn are a stray.
func (g *guardedConn) exchangeDone() {
	g.mu.Lock()
	g.expecting = false
	g.readsAtDone = g.reads
	g.mu.Unlock()
}

// endHead stops recording once the Transport has parsed the response head, and dooms the
// connection if the head's framing is doubtful.
func (g *guardedConn) endHead(method string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recording = false
	if plain, _ := reusableHead(g.head, method); !plain {
		g.doomed = true
	}
	if cap(g.head) > maxPooledHead {
		g.head = nil
	}
}

// socketState is upConn.check for any socket. Control, not Read: another goroutine may be
// blocked reading, and the peek must not wait for it.
func socketState(raw syscall.RawConn) idleState {
	if raw == nil {
		return idleQuiet
	}
	uc := upConn{raw: raw}
	uc.peekState = idleClosed
	if err := raw.Control(uc.peek); err != nil {
		return idleClosed
	}
	return uc.peekState
}

// guardDial wraps dial so that every connection it makes is a guardedConn.
func guardDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newGuardedConn(c), nil
	}
}

var errBodyNotReplayable = errors.New("proxy: the request body was already sent once")

// maxReplay is how much of a request body replayBody keeps for a second attempt. The
// Transport reads at most a copy buffer's worth (32 KiB) before its first write fails.
const maxReplay = 64 << 10

// replayBody is a request body that can be sent again as long as no more than maxReplay
// bytes of it were read: what was read is kept, the rest is still in the source.
type replayBody struct {
	src    io.ReadCloser
	length int64 // the request's Content-Length, -1 when unknown

	mu      sync.Mutex
	kept    []byte
	pos     int  // where this attempt reads kept from (a replay starts at 0)
	over    bool // read past maxReplay: no second attempt
	eof     bool
	reading bool // a Read of src is under way
	closed  bool // src is closed
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.pos < len(b.kept) {
		n := copy(p, b.kept[b.pos:])
		b.pos += n
		b.mu.Unlock()
		return n, nil
	}
	if b.complete() {
		b.mu.Unlock()
		return 0, io.EOF
	}
	b.reading = true
	b.mu.Unlock()
	n, err := b.src.Read(p) // not under the lock: Close must be able to unblock it
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	if !b.over {
		if len(b.kept)+n > maxReplay {
			b.over, b.kept = true, nil
		} else {
			b.kept = append(b.kept, p[:n]...)
		}
		b.pos = len(b.kept)
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close ends an attempt. It closes the source when a read is stuck on it (the client
// stopped sending) or no second attempt is possible; otherwise the source stays open for
// a replay, and the server closes it when the request ends.
func (b *replayBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || !(b.reading || b.over) {
		return nil
	}
	b.closed = true
	return b.src.Close()
}

// complete reports whether the whole body was read (and, unless over, kept).
func (b *replayBody) complete() bool {
	return b.eof || (b.length >= 0 && !b.over && int64(len(b.kept)) >= b.length)
}

// again is GetBody: the same body from its start.
func (b *replayBody) again() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over || b.reading || (b.closed && !b.complete()) {
		return nil, errBodyNotReplayable
	}
	b.pos = 0
	return b, nil
}

// fallbackRoundTrip is the http.Transport's round trip with the checks the inline path
// makes on its own responses: a bound on 1xx responses, status codes in 100-999, and the
// guardedConn's reuse checks.
func (t *inlineTransport) fallbackRoundTrip(r *http.Request) (*http.Response, error) {
	var g *guardedConn
	watchEarly := r.Header["Expect"] == nil // a 100 Continue comes before the body is sent
	n1xx := 0
	// A trace hook's error is dropped when hooks are composed (ReverseProxy has its own):
	// too many 1xx end the round trip through the context instead.
	// Not canceled on return: the body is read under it. It ends with the request's.
	ctx, cancel := context.WithCancelCause(r.Context())
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if c, ok := info.Conn.(*guardedConn); ok {
				g = c
				c.gotConn(info.Reused, t.maxHead, t.guard, watchEarly)
			}
		},
		// Called by the read loop before it reads again: from here the connection
		// expects nothing until the next gotConn.
		PutIdleConn: func(err error) {
			if g != nil && err == nil {
				g.exchangeDone()
			}
		},
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			if n1xx++; n1xx > max1xx {
				cancel(errTooMany1xx)
				return errTooMany1xx
			}
			return nil
		},
	}
	out := r.WithContext(httptrace.WithClientTrace(ctx, trace))
	if t.guard.quarantined() {
		out.Close = true // one exchange on the connection (a reused one is refused in gotConn)
	}
	if out.Body != nil && out.Body != http.NoBody && out.GetBody == nil {
		// The Transport retries a request whose connection failed before anything was
		// written (one gotConn closed) only when it can send the body again.
		rb := &replayBody{src: out.Body, length: out.ContentLength}
		out.Body, out.GetBody = rb, rb.again
	}
	var res *http.Response
	var err error
	for attempt := 0; ; attempt++ {
		g = nil
		res, err = t.fallback.RoundTrip(out)
		if g != nil {
			g.endHead(r.Method)
		}
		// A kept connection whose FIN the Transport's read loop read after the guard's
		// check handed it to the request and before the Transport counted the request
		// on it: the Transport fails it with "server closed idle connection", which it
		// retries only for idempotent requests (Go 1.26; every other failure before a
		// byte went out it retries itself, given GetBody). Nothing reached the app, so
		// once more. TestFallbackPOSTOnIdleConnectionClosedAtHandOut is that case.
		if err == nil || g == nil || !g.unsent() || attempt > 0 || ctx.Err() != nil {
			break
		}
		if out.GetBody != nil {
			body, gerr := out.GetBody()
			if gerr != nil {
				break
			}
			out.Body = body
		}
	}
	if context.Cause(ctx) == errTooMany1xx {
		// The final response may have been read before the cancel took effect.
		if err == nil {
			res.Body.Close()
		}
		return nil, errTooMany1xx
	}
	if err != nil {
		return nil, err
	}
	if res.StatusCode < 100 || res.StatusCode > 999 {
		// ReverseProxy would panic in WriteHeader; the connection goes with the body.
		res.Body.Close()
		return nil, &BadStatusError{res.StatusCode}
	}
	return res, nil
}
