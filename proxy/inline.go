package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// inlineTransport runs the common upstream round trip (a bodiless GET, HEAD or OPTIONS
// from an HTTP/1 client to a plain-HTTP or unix-socket upstream) on the handler's own
// goroutine, over a connection from a LIFO pool of idle upstream connections. It skips the
// http.Transport's per-request hand-offs to its read and write goroutines, which cost about
// a third of the proxy's CPU per request. Everything else (request bodies, upgrades, Expect,
// HTTP/2 clients, TLS upstreams) goes to the backend's http.Transport unchanged.
type inlineTransport struct {
	fallback      *http.Transport
	bufs          *connBuffers                                // shared by every backend of the proxy
	dial          func(ctx context.Context) (net.Conn, error) // nil: never inline (https)
	headerTimeout time.Duration
	readTimeout   time.Duration // between two reads of a response body (progress.go)
	maxHead       int64         // bytes a response head may take, 1xx heads included
	pool          idlePool
	guard         *strayGuard // quarantine of an upstream that sent stray responses (stray.go)
}

// max1xx bounds the informational responses accepted before the final one, as the
// http.Transport does, so an upstream cannot keep a request busy with 1xx forever.
const max1xx = 5

var (
	errTooMany1xx     = errors.New("proxy: too many 1xx informational responses from the upstream")
	errSwitchedProtos = errors.New("proxy: upstream switched protocols without an upgrade request")
	errBodyClosed     = errors.New("proxy: read on closed upstream response body")
)

// HeadTooLargeError is the round-trip error for an upstream response head (status line and
// header fields, 1xx heads included) longer than Options.MaxResponseHeaderBytes.
type HeadTooLargeError struct{ Limit int64 }

func (e *HeadTooLargeError) Error() string {
	return fmt.Sprintf("upstream response headers over the limit of %d bytes", e.Limit)
}

// BadStatusError is the round-trip error for a response whose status code is outside
// 100-999, which no client could be answered with.
type BadStatusError struct{ Code int }

func (e *BadStatusError) Error() string {
	return fmt.Sprintf("upstream sent status code %03d, outside 100-999", e.Code)
}

// newInlineTransport wraps fallback, built by newTransport from opts, for upstream u.
func newInlineTransport(opts Options, fallback *http.Transport, bufs *connBuffers) *inlineTransport {
	t := &inlineTransport{fallback: fallback, bufs: bufs, headerTimeout: opts.ResponseHeaderTimeout,
		readTimeout: opts.ReadTimeout, maxHead: opts.MaxResponseHeaderBytes}
	t.pool.max = opts.IdleConns
	if opts.DisableKeepAlives {
		t.pool.max = 0
	}
	t.pool.timeout = opts.IdleConnTimeout
	t.guard = &strayGuard{counts: opts.ProtocolErrors, log: opts.Logger, target: opts.Upstream.String(),
		period: opts.StrayQuarantine, closeIdle: t.CloseIdleConnections}
	t.pool.guard = t.guard
	u := opts.Upstream
	guarded := fallback.DialContext
	// The inline path guards its connections itself.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := guarded(ctx, network, addr)
		if g, ok := c.(*guardedConn); ok {
			return g.Conn, nil
		}
		return c, err
	}
	switch u.Scheme {
	case "http":
		port := u.Port()
		if port == "" {
			port = "80"
		}
		addr := net.JoinHostPort(u.Hostname(), port)
		t.dial = func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", addr) }
	case "unix":
		// newTransport's dial goes to the socket whatever the address.
		t.dial = func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", "localhost:80") }
	}
	return t
}

// inlinable reports whether r may take the inline path.
func (t *inlineTransport) inlinable(r *http.Request) bool {
	if t.dial == nil || r.ProtoMajor != 1 || r.ContentLength != 0 || r.Close ||
		(r.Body != nil && r.Body != http.NoBody) {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return r.Header["Upgrade"] == nil && r.Header["Expect"] == nil
}

func (t *inlineTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.guard.flushPending()
	if !t.inlinable(r) {
		return t.fallbackRoundTrip(r)
	}
	uc := t.takeIdle()
	res, err := t.try(r, uc)
	if uc != nil && err != nil && errors.Is(err, errStale) && r.Context().Err() == nil {
		// The upstream closed the kept connection while it sat idle: nothing came back, and
		// the request is idempotent and bodiless. Once more on a fresh connection.
		res, err = t.try(r, nil)
	}
	return res, err
}

// takeIdle takes the most recently used idle connection that is still quiet: one the
// upstream closed meanwhile, or that received bytes nobody asked for (a late response, a
// 408 before closing), is closed instead. Whatever such bytes are, they must not be read
// as the answer to the request about to be sent; all but a 408 are a stray (StrayIdle).
func (t *inlineTransport) takeIdle() *upConn {
	for {
		uc, state := t.pool.take()
		if uc == nil {
			return nil
		}
		if state == idleQuiet {
			state = uc.check()
		}
		switch state {
		case idleQuiet:
			return uc
		case idleBytes:
			t.guard.report(strayIdle, "bytes on an idle connection: "+uc.peekedText())
		}
		uc.c.Close()
		t.pool.dropped.Add(1)
	}
}

// CloseIdleConnections closes the idle connections of both paths.
func (t *inlineTransport) CloseIdleConnections() {
	t.pool.closeIdle(false)
	t.guard.closingIdle(t.fallback.CloseIdleConnections)
}

// close is CloseIdleConnections for a backend that takes no more requests: connections
// coming back from requests still in flight are closed instead of kept. It returns once
// the idle watches (watchIdle) have ended.
func (t *inlineTransport) close() {
	t.pool.closeIdle(true)
	t.guard.closingIdle(t.fallback.CloseIdleConnections)
	t.pool.watchers.Wait()
}

// errStale marks a failure on a reused connection before any response byte arrived.
var errStale = errors.New("proxy: kept upstream connection was closed")

type staleError struct{ err error }

func (e *staleError) Error() string   { return e.err.Error() }
func (e *staleError) Unwrap() []error { return []error{errStale, e.err} }

// closedByPeer reports whether err says the peer closed or reset the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// try does one round trip of r over uc, or over a fresh connection when uc is nil.
func (t *inlineTransport) try(r *http.Request, uc *upConn) (*http.Response, error) {
	ctx := r.Context()
	reused := uc != nil
	if !reused {
		c, err := t.dial(ctx)
		if err != nil {
			if ce := ctx.Err(); ce != nil {
				return nil, ce
			}
			return nil, err
		}
		uc = newUpConn(c)
	}
	uc.br = t.bufs.reader(uc)
	// A canceled request (client gone, drain deadline) unblocks reads and writes at once;
	// its connection is never reused after that.
	stop := context.AfterFunc(ctx, uc.poison)
	fail := func(err error, gotBytes bool) (*http.Response, error) {
		stop()
		uc.c.Close()
		_, hb := uc.endHead()
		t.bufs.putHead(hb)
		uc.releaseReader(t.bufs)
		if ce := ctx.Err(); ce != nil {
			// Whatever the poisoned deadline made the read or write return, the cause
			// is the request's context: answerError must see it (499, not 504).
			return nil, ce
		}
		if reused && !gotBytes && closedByPeer(err) {
			return nil, &staleError{err}
		}
		return nil, err
	}
	bw := t.bufs.writer(uc.c)
	err := writeHead(bw, r)
	if err == nil {
		err = bw.Flush()
	}
	t.bufs.putWriter(bw)
	if err != nil {
		return fail(err, false)
	}
	if t.headerTimeout > 0 {
		uc.c.SetReadDeadline(time.Now().Add(t.headerTimeout))
	}
	var res *http.Response
	uc.startHead(t.maxHead, t.bufs.head())
	for n1xx := 0; ; n1xx++ {
		if _, err := uc.br.Peek(1); err != nil {
			return fail(headerErr(err), n1xx > 0)
		}
		var err error
		if res, err = http.ReadResponse(uc.br, r); err != nil {
			return fail(headerErr(err), true)
		}
		if res.StatusCode < 100 || res.StatusCode > 999 {
			res.Body.Close()
			return fail(&BadStatusError{res.StatusCode}, true)
		}
		if res.StatusCode >= 200 {
			break
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return fail(errSwitchedProtos, true)
		}
		if n1xx >= max1xx {
			return fail(errTooMany1xx, true)
		}
		if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.Got1xxResponse != nil {
			if err := tr.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return fail(err, true)
			}
		}
	}
	if t.headerTimeout > 0 {
		// Cleared only if the cancel has not poisoned it meanwhile: the poison sets the
		// deadline under the same lock.
		uc.clearReadDeadline()
	}
	head, hb := uc.endHead()
	plain, _ := reusableHead(head, r.Method)
	t.bufs.putHead(hb)
	res.Body = &inlineBody{rc: res.Body, uc: uc, t: t, ctx: ctx, stop: stop,
		keep: !res.Close && plain, eof: res.Body == http.NoBody}
	return res, nil
}

// writeHead writes the head of r, a bodiless GET, HEAD or OPTIONS, as Request.Write would,
// without the allocations Request.Write makes on every call (formatting, a sorted copy of
// the header, a transfer writer): a tenth of the proxy's per-request allocations. A host
// that needs more than copying (IDNA, an IPv6 zone, an invalid one) goes through
// Request.Write. Header fields go out in map order, which HTTP allows: only the order of
// values of one field matters, and that is kept.
func writeHead(bw *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if !plainHost(host) {
		return r.Write(bw)
	}
	ruri := r.URL.RequestURI()
	if strings.ContainsFunc(ruri, isCTL) {
		return errors.New("proxy: control character in the request URL")
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	// As Request.Write: Go's agent when the header has none, nothing when it is empty.
	if ua, ok := r.Header["User-Agent"]; !ok {
		bw.WriteString("User-Agent: Go-http-client/1.1\r\n")
	} else if len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}
	for k, vs := range r.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // written above, or not for a bodiless request
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue // dropped, as Request.Write does
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeField writes one header line; line breaks in v become spaces, as in Request.Write.
// Byte by byte: other bytes, invalid UTF-8 included, go out as they came (strings.Map
// would turn those into U+FFFD; FuzzWriteHead found it).
func writeField(bw *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		b := []byte(v)
		for i, c := range b {
			if c == '\r' || c == '\n' {
				b[i] = ' '
			}
		}
		v = string(b)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(v))
	bw.WriteString("\r\n")
}

// plainHost reports whether host can be written as it is: ASCII, no IPv6 zone, valid.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 || host[i] == '%' {
			return false
		}
	}
	return httpguts.ValidHostHeader(host)
}

func isCTL(r rune) bool { return r < ' ' || r == 0x7f }

// headerErr names a timeout waiting for the response headers as such; it stays a
// net.Error whose Timeout is true (504).
func headerErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("timeout awaiting response headers: %w", err)
	}
	var tooLarge *HeadTooLargeError
	if errors.As(err, &tooLarge) {
		return tooLarge // ReadResponse wraps it in a "malformed" error that hides the cause
	}
	return err
}

// upConn is one upstream connection. It holds a read buffer only while a request is on
// it: an idle pooled connection costs no buffer memory, which matters with hundreds of
// them (the request is written through a pooled writer and needs none between requests).
type upConn struct {
	c        net.Conn
	br       *bufio.Reader // from readers while a request is on the connection; else nil
	lastUsed time.Time

	// raw peeks at an idle socket (quiet); nil when c is no socket. peekFn is peek bound
	// once per connection, so that a check does not allocate.
	raw       syscall.RawConn
	peekFn    func(fd uintptr)
	peekBuf   [len("HTTP/1.1 408")]byte
	peekN     int
	peekState idleState

	// While a response head is read (inHead): how many more bytes may be read, and a copy
	// of them for reusableHead.
	inHead   bool
	headLeft int64
	headMax  int64
	head     []byte
	headBuf  *[]byte

	mu       sync.Mutex
	poisoned bool // the request's context ended: deadline in the past, never reuse

	watch *idleWatch // the watch of the connection while idle (watchIdle); nil before the first
}

func newUpConn(c net.Conn) *upConn {
	uc := &upConn{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			uc.raw = raw
			uc.peekFn = uc.peek
		}
	}
	return uc
}

// idleState is what an idle connection's socket holds.
type idleState int

const (
	idleQuiet  idleState = iota // open, nothing received: fit for reuse
	idleClosed                  // the peer closed or reset it (or the check failed)
	idleBytes                   // bytes nobody asked for (not a 408 before a close)
)

// check looks at an idle connection's socket: a non-blocking MSG_PEEK, which finds both
// unread bytes and the peer's FIN. A 408 status line is the app's idle timeout, which
// HTTP allows (net/http's Transport ignores it too): idleClosed, not idleBytes.
func (uc *upConn) check() idleState {
	if uc.raw == nil {
		return idleQuiet
	}
	uc.peekState = idleClosed
	if err := uc.raw.Control(uc.peekFn); err != nil {
		return idleClosed
	}
	return uc.peekState
}

func (uc *upConn) peek(fd uintptr) {
	n, _, err := syscall.Recvfrom(int(fd), uc.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		uc.peekState = idleQuiet
	case err != nil || n <= 0:
		uc.peekState = idleClosed
	default:
		uc.peekN = n
		uc.peekState = idleBytes
		if is408(uc.peekBuf[:n]) {
			uc.peekState = idleClosed
		}
	}
}

// peekedText is what check found, for the log.
func (uc *upConn) peekedText() string { return fmt.Sprintf("%q", uc.peekBuf[:uc.peekN]) }

// is408 reports whether b is (the start of) a 408 status line.
func is408(b []byte) bool {
	return len(b) == len("HTTP/1.1 408") && strings.HasPrefix(string(b), "HTTP/1.") && string(b[8:]) == " 408"
}

// startHead bounds and records what is read from now until endHead: the response head.
// max <= 0 is no bound.
func (uc *upConn) startHead(max int64, buf *[]byte) {
	uc.inHead, uc.headMax, uc.headLeft = true, max, max
	uc.headBuf, uc.head = buf, (*buf)[:0]
}

// endHead ends the head and returns the bytes read during it (the head, perhaps the start
// of the body), and their pooled holder for connBuffers.putHead; both nil outside a head.
func (uc *upConn) endHead() ([]byte, *[]byte) {
	head, buf := uc.head, uc.headBuf
	if buf != nil {
		*buf = head
	}
	uc.inHead, uc.head, uc.headBuf = false, nil, nil
	return head, buf
}

// Read is the bufio.Reader's source: the connection, bounded and recorded during a head.
func (uc *upConn) Read(p []byte) (int, error) {
	if !uc.inHead {
		return uc.c.Read(p)
	}
	if uc.headMax > 0 {
		if uc.headLeft <= 0 {
			return 0, &HeadTooLargeError{uc.headMax}
		}
		if int64(len(p)) > uc.headLeft {
			p = p[:uc.headLeft]
		}
	}
	n, err := uc.c.Read(p)
	uc.headLeft -= int64(n)
	uc.head = append(uc.head, p[:n]...)
	return n, err
}

// releaseReader gives the read buffer back to bufs. Only for a connection that is closed
// or whose buffer is empty: an idle connection must not hold unread bytes.
func (uc *upConn) releaseReader(bufs *connBuffers) {
	if uc.br != nil {
		bufs.putReader(uc.br)
		uc.br = nil
	}
}

// connBuffers lends buffered readers and writers to upstream connections for the length
// of one exchange. 4 KiB holds the head of nearly every request and response; a longer
// one takes more reads or writes.
type connBuffers struct {
	readers sync.Pool // *bufio.Reader
	writers sync.Pool // *bufio.Writer
	heads   sync.Pool // *[]byte: copies of response heads
}

// maxPooledHead is the largest head copy kept for reuse; a rare larger head's goes to
// the garbage collector.
const maxPooledHead = 16 << 10

func (p *connBuffers) head() *[]byte {
	if b, ok := p.heads.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 1024)
	return &b
}

func (p *connBuffers) putHead(b *[]byte) {
	if b != nil && cap(*b) <= maxPooledHead {
		*b = (*b)[:0]
		p.heads.Put(b)
	}
}

func (p *connBuffers) reader(c io.Reader) *bufio.Reader {
	if br, ok := p.readers.Get().(*bufio.Reader); ok {
		br.Reset(c)
		return br
	}
	return bufio.NewReaderSize(c, 4096)
}

func (p *connBuffers) putReader(br *bufio.Reader) {
	br.Reset(nil)
	p.readers.Put(br)
}

func (p *connBuffers) writer(c net.Conn) *bufio.Writer {
	if bw, ok := p.writers.Get().(*bufio.Writer); ok {
		bw.Reset(c)
		return bw
	}
	return bufio.NewWriterSize(c, 4096)
}

func (p *connBuffers) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	p.writers.Put(bw)
}

// poison runs when the request's context ends first. The deadline unblocks a read or
// write at once; the close frees the socket even if nobody closes the response body (a
// panic between the round trip and the copy), instead of when a finalizer runs.
func (uc *upConn) poison() {
	uc.mu.Lock()
	uc.poisoned = true
	uc.c.SetDeadline(time.Unix(1, 0))
	uc.mu.Unlock()
	uc.c.Close()
}

func (uc *upConn) clearReadDeadline() {
	uc.mu.Lock()
	if !uc.poisoned {
		uc.c.SetReadDeadline(time.Time{})
	}
	uc.mu.Unlock()
}

// inlineBody gives the upstream connection back to the pool once the body was read to
// the end, and closes it when the body is abandoned.
type inlineBody struct {
	rc   io.ReadCloser
	uc   *upConn
	t    *inlineTransport
	ctx  context.Context
	stop func() bool
	keep bool // the upstream allows another request on the connection
	eof  bool
	done atomic.Bool
}

func (b *inlineBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, errBodyClosed
	}
	if b.t.readTimeout > 0 {
		b.uc.extendReadDeadline(b.t.readTimeout)
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		if ce := b.ctx.Err(); ce != nil {
			// The poisoned deadline, not an upstream failure.
			err = ce
		}
	}
	return n, err
}

func (b *inlineBody) Close() error {
	if !b.done.CompareAndSwap(false, true) {
		return nil
	}
	// stop fails when the cancel already ran: the deadline is poisoned.
	stopped := b.stop()
	if !(b.eof && b.keep && stopped) {
		// The connection first: closing a half-read body would otherwise read the rest,
		// forever on an endless stream.
		b.uc.c.Close()
		b.rc.Close()
		b.uc.releaseReader(b.t.bufs)
		return nil
	}
	b.rc.Close()
	// Bytes after the end of the response are a broken upstream: not a connection to keep.
	// The buffer goes back first: once given to the pool, the connection is another's.
	leftover := b.uc.br.Buffered()
	if leftover > 0 {
		peek, _ := b.uc.br.Peek(min(leftover, 16))
		b.t.guard.report(strayUnrequested, fmt.Sprintf("%d bytes after a complete response: %q", leftover, peek))
	}
	b.uc.releaseReader(b.t.bufs)
	if b.t.readTimeout > 0 {
		b.uc.c.SetReadDeadline(time.Time{}) // an idle connection keeps no deadline
	}
	if leftover > 0 || !b.t.pool.give(b.uc) {
		b.uc.c.Close()
	}
	return nil
}

// idlePool is a stack of idle upstream connections: the most recently used is taken
// first, so the ones at the bottom go unused and age out after the idle timeout.
type idlePool struct {
	mu      sync.Mutex
	idle    []*upConn
	max     int
	timeout time.Duration
	timer   *time.Timer // armed while idle is not empty
	armed   bool
	closed  bool        // the backend is retired: keep nothing
	guard   *strayGuard // nothing is kept while it is quarantined

	// The watches of idle connections (watchIdle): watchTimer starts them, armed while a
	// connection may be idle without one; watchers counts those running.
	watchTimer *time.Timer
	watchArmed bool
	watchers   sync.WaitGroup

	dropped atomic.Int64 // idle connections closed by takeIdle (for tests)
	watched atomic.Int64 // idle connections closed by their watch (for tests)
}

// take takes the most recently used idle connection, with what its watch found if it had
// one (idleQuiet if it had none, or it found nothing): the watch has ended when it returns.
func (p *idlePool) take() (*upConn, idleState) {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil, idleQuiet
	}
	uc := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	w := uc.watch
	watched := w != nil && w.on
	if watched {
		w.taken = true
	}
	p.mu.Unlock()
	if !watched {
		return uc, idleQuiet
	}
	return uc, w.stop()
}

// give keeps uc for reuse; false when the pool is full or closed (the caller closes uc).
func (p *idlePool) give(uc *upConn) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	// The quarantine is checked under the lock that closeIdle takes after it began: a
	// connection is either refused here or closed there.
	if p.closed || len(p.idle) >= p.max || (p.guard != nil && p.guard.quarantined()) {
		return false
	}
	uc.lastUsed = now
	p.idle = append(p.idle, uc)
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.timeout, p.reap)
		} else {
			p.timer.Reset(p.timeout)
		}
	}
	if !p.watchArmed {
		p.watchArmed = true
		if p.watchTimer == nil {
			p.watchTimer = time.AfterFunc(idleWatchDelay, p.startWatches)
		} else {
			p.watchTimer.Reset(idleWatchDelay)
		}
	}
	return true
}

// reap closes the connections idle longer than the timeout; they are at the bottom.
func (p *idlePool) reap() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].lastUsed) >= p.timeout {
		if p.guard != nil && p.idle[n].check() == idleBytes {
			// A stray on a connection never taken again: counted all the same, by the
			// next request (report closes idle connections, under this lock).
			p.guard.deferReport(strayIdle)
		}
		p.idle[n].c.Close()
		n++
	}
	if n > 0 {
		k := copy(p.idle, p.idle[n:])
		clear(p.idle[k:])
		p.idle = p.idle[:k]
	}
	if len(p.idle) == 0 {
		p.armed = false
		return
	}
	p.timer.Reset(p.idle[0].lastUsed.Add(p.timeout).Sub(now))
}

// closeIdle closes every idle connection; retire also refuses connections given back later.
func (p *idlePool) closeIdle(retire bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if retire {
		p.closed = true
	}
	for i, uc := range p.idle {
		uc.c.Close()
		p.idle[i] = nil
	}
	p.idle = p.idle[:0]
	if p.timer != nil {
		p.timer.Stop()
	}
	p.armed = false
	if p.watchTimer != nil {
		p.watchTimer.Stop()
	}
	p.watchArmed = false
}

// idleCount is how many connections the pool keeps now (for tests).
func (p *idlePool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}
