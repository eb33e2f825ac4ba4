package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Progress timeouts. Each bounds the time one side of an exchange may go without moving a
// byte, never the length of the transfer, so that long downloads, uploads, event streams
// and WebSockets work as long as they move (nginx's send_timeout, client_body_timeout,
// proxy_read_timeout and proxy_send_timeout; HAProxy's timeout tunnel). Each counts only
// the time spent blocked on that side: a response that waits for a slow client is not an
// upstream stall, and the other way round.
//
// What the client sees when one fires: before the response headers, an answer (408 for a
// request body that stopped, 504 for an upstream that stopped reading the request); after
// them, the connection is closed, as only that tells an HTTP client the response is cut
// short. The access log's upstream_error carries the reason either way, and one line is
// logged.

// Reasons for a cut by a progress timeout, as passed to ErrorRecorder.
const (
	ReasonSendTimeout        = "send_timeout"         // the client stopped reading the response: connection closed
	ReasonClientBodyTimeout  = "client_body_timeout"  // the client stopped sending its request body: 408
	ReasonReadTimeout        = "read_timeout"         // the upstream stopped sending the response body: connection closed
	ReasonUpgradeIdleTimeout = "upgrade_idle_timeout" // an upgraded connection (WebSocket) moved nothing either way: closed
	ReasonWindowTimeout      = "window_timeout"       // an HTTP/2 client gave a response no send window: stream reset
	ReasonShed               = "shed"                 // blocked on its client while others waited for the upstream (Overload): cut
)

var errShed = errors.New("cut to make room: blocked on the client while other requests waited for the upstream")

// progressTimeout is the error of a cut by a progress timeout. It is a net.Error whose
// Timeout is true, and it matches os.ErrDeadlineExceeded.
type progressTimeout struct {
	what    string
	timeout time.Duration
}

func (e *progressTimeout) Error() string {
	return fmt.Sprintf("%s: nothing moved for %s", e.what, e.timeout)
}
func (e *progressTimeout) Timeout() bool        { return true }
func (e *progressTimeout) Temporary() bool      { return false }
func (e *progressTimeout) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// isTimeout reports whether err is a connection deadline that passed (not the end of a
// request's context, which has causes of its own).
func isTimeout(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// progressKey carries a request's *progressWriter in its context, for the transport.
type progressKey struct{}

// progressWriter is the ResponseWriter of one proxied request: it arms the send timeout
// before every write to the client and records what cut the exchange. It is also the
// request's context, the parent's with one more value (progressKey: itself), which saves
// the hot path an allocation of context.WithValue.
type progressWriter struct {
	http.ResponseWriter
	context.Context
	p   *Proxy
	r   *http.Request
	rec ErrorRecorder // the writer's (or a writer's inside it), when it has one

	body upstreamBody // the response body's wrapper on the inline path: one allocation less

	cut atomic.Bool // a progress timeout has been recorded
	// writing is when the write to the client in progress began (UnixNano), 0 between
	// writes: Overload sheds requests blocked on their client.
	writing atomic.Int64
	// sent is set once a write to the client has returned: until then an HTTP/2 stream
	// has the shorter WindowTimeout.
	sent         atomic.Bool
	shedding     atomic.Bool // Overload cut it
	bodyTimedOut atomic.Bool // the client body timeout fired: answer 408
	// headUnarmed: a final head was written and no write or flush has armed the send
	// timeout since (handler's goroutine only): the server sends that head with the
	// first body bytes or after the handler returns, so finish arms it then.
	headUnarmed bool

	// What cut the exchange, set once cut is (from any goroutine: a timer, the
	// Transport's body writer); finish hands it to rec on the handler's goroutine.
	reason string
	status int
	err    error
	ready  atomic.Bool // reason, status and err are set
}

// watchProgress wraps w and r for the progress timeouts and gives r the context ctx (the
// one copy of the request that takes), or only the context when all are off. The writer
// is rp's (one allocation less per request).
func (p *Proxy) watchProgress(rp *reply, w http.ResponseWriter, r *http.Request, ctx context.Context) (http.ResponseWriter, *http.Request) {
	o := &p.opts
	if o.SendTimeout <= 0 && o.WindowTimeout <= 0 && o.ClientBodyTimeout <= 0 && o.ReadTimeout <= 0 && o.UpgradeIdleTimeout <= 0 {
		return w, r.WithContext(ctx)
	}
	pw := &rp.progress
	pw.ResponseWriter, pw.Context, pw.p = w, ctx, p
	pw.rec = recorderOf(w) // through wrappers too (http10Writer for an HTTP/1.0 client)
	if o.ClientBodyTimeout > 0 && r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientBody{ReadCloser: r.Body, w: pw, timeout: o.ClientBodyTimeout}
	}
	r = r.WithContext(pw)
	pw.r = r
	return pw, r
}

// Value makes progressWriter the context of its request; see the type.
func (w *progressWriter) Value(key any) any {
	if key == (progressKey{}) {
		return w
	}
	return w.Context.Value(key)
}

// record keeps the first progress cut of the exchange for the access log, and logs it.
func (w *progressWriter) record(reason string, status int, err error) {
	if !w.cut.CompareAndSwap(false, true) {
		return
	}
	w.reason, w.status, w.err = reason, status, err
	w.ready.Store(true)
	r, log := w.r, w.p.log
	switch reason {
	case ReasonSendTimeout:
		log.Warn("client stopped reading the response; connection closed", "send_timeout", w.p.opts.SendTimeout.String(),
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	case ReasonClientBodyTimeout:
		log.Warn("client stopped sending the request body", "client_body_timeout", w.p.opts.ClientBodyTimeout.String(),
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	case ReasonReadTimeout:
		log.Error("upstream stopped sending the response body; connection closed", "upstream", w.p.Upstream(),
			"read_timeout", w.p.opts.ReadTimeout.String(), "method", r.Method, "path", r.URL.Path)
	case ReasonWindowTimeout:
		log.Debug("HTTP/2 client gave the response no send window; stream reset", "window_timeout", w.p.opts.WindowTimeout.String(),
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	case ReasonShed:
		log.Debug("response blocked on its client cut to make room for waiting requests",
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	case ReasonUpgradeIdleTimeout:
		log.Info("upgraded connection idle; closed", "upgrade_idle_timeout", w.p.opts.UpgradeIdleTimeout.String(),
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	}
}

// finish hands the cut, if any, to the access log. It runs on the handler's goroutine
// as the exchange ends (a panic included), so that the recorder needs no locking.
func (w *progressWriter) finish() {
	if w.headUnarmed {
		w.armSend() // the head goes out as the handler returns
	}
	if w.rec != nil && w.ready.Load() {
		w.rec.RecordUpstreamError(w.reason, w.status, w.err)
	}
}

// armSend gives the next write to the client send_timeout from now, or, for the first
// write of an HTTP/2 response, window_timeout if shorter: a stream whose client never
// gives it send window (SETTINGS_INITIAL_WINDOW_SIZE=0) would otherwise hold an
// upstream request for the whole send_timeout. It returns the time it armed from.
func (w *progressWriter) armSend() time.Time {
	now := time.Now()
	d := w.p.opts.SendTimeout
	if wt := w.p.opts.WindowTimeout; !w.sent.Load() && wt > 0 && w.r.ProtoMajor == 2 && (d <= 0 || wt < d) {
		d = wt
	}
	if d > 0 {
		http.NewResponseController(w.ResponseWriter).SetWriteDeadline(now.Add(d))
	}
	return now
}

func (w *progressWriter) sendFailed(err error) {
	if !isTimeout(err) {
		return
	}
	switch {
	case w.shedding.Load():
		w.record(ReasonShed, StatusClientClosedRequest, errShed)
	case !w.sent.Load() && w.p.opts.WindowTimeout > 0 && w.r.ProtoMajor == 2:
		w.record(ReasonWindowTimeout, StatusClientClosedRequest, &progressTimeout{"send window from the client", w.p.opts.WindowTimeout})
	case w.p.opts.SendTimeout > 0:
		w.record(ReasonSendTimeout, StatusClientClosedRequest, &progressTimeout{"send to the client", w.p.opts.SendTimeout})
	}
}

// shed cuts the exchange to give its upstream slot to a waiting request (Overload): it
// is blocked writing to a client that does not read. Called with the Overload's lock
// held, while the request holds its slot, so its writer is still live.
func (w *progressWriter) shed() {
	w.shedding.Store(true)
	http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(-time.Second))
}

// WriteHeader arms the send timeout for a 1xx, which goes out at once. A final head waits
// in the server's buffer for the first Write or Flush, which arm it, or for the
// handler's return (finish arms it): arming here as well cost a deadline change (the
// runtime's timer lock) per request for no write.
func (w *progressWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		w.armSend()
	} else {
		w.headUnarmed = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.headUnarmed = false
	w.writing.Store(w.armSend().UnixNano())
	n, err := w.ResponseWriter.Write(b)
	w.writing.Store(0)
	if err != nil {
		w.sendFailed(err)
	} else if n > 0 {
		w.sent.Store(true)
	}
	return n, err
}

// FlushError lets http.ResponseController (and so ReverseProxy's streaming) flush.
func (w *progressWriter) FlushError() error {
	w.headUnarmed = false
	w.writing.Store(w.armSend().UnixNano())
	err := http.NewResponseController(w.ResponseWriter).Flush()
	w.writing.Store(0)
	if err != nil {
		w.sendFailed(err) // a flush may carry no body byte: it does not end the window wait
	}
	return err
}

// Unwrap lets http.ResponseController reach the writers underneath (Hijack, deadlines).
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RecordUpstreamError implements ErrorRecorder for the proxy's own error answers.
func (w *progressWriter) RecordUpstreamError(reason string, status int, err error) {
	if w.rec != nil && !w.cut.Load() {
		w.rec.RecordUpstreamError(reason, status, err)
	}
}

// clearClientDeadlines leaves no deadline on the client connection for what follows an
// upgrade: the tunnel has its own idle timeout, and a deadline left behind would cut it.
func (w *progressWriter) clearClientDeadlines() {
	rc := http.NewResponseController(w.ResponseWriter)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
}

// clientBody arms the client body timeout before every read of the request body. When
// the body reaches its end, net/http clears the read deadline itself and starts reading
// the connection in the background (to notice a client that goes away); a deadline set
// after that would cut the request, so none is.
type clientBody struct {
	io.ReadCloser
	w       *progressWriter
	timeout time.Duration
	ended   bool // a read returned an error or the end: arm nothing more
}

func (b *clientBody) Read(p []byte) (int, error) {
	if !b.ended {
		http.NewResponseController(b.w.ResponseWriter).SetReadDeadline(time.Now().Add(b.timeout))
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.ended = true
	}
	if err != nil && err != io.EOF && isTimeout(err) {
		err = &progressTimeout{"read the request body from the client", b.timeout}
		b.w.bodyTimedOut.Store(true)
		b.w.record(ReasonClientBodyTimeout, http.StatusRequestTimeout, err)
	}
	return n, err
}

// answerProgressError answers a failed round trip that a progress timeout caused, and
// reports whether it did: 408 when the client's request body stopped. (net/http cancels
// the request when a read from the client fails, so the round trip's own error says
// "canceled", not why.)
func (p *Proxy) answerProgressError(w http.ResponseWriter) bool {
	pw, ok := w.(*progressWriter)
	if g, guarded := w.(*headerGuard); guarded {
		pw, ok = g.ResponseWriter.(*progressWriter)
	}
	if !ok || !pw.bodyTimedOut.Load() {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusRequestTimeout)
	io.WriteString(w, "408 Request Timeout: the request body stopped arriving\n")
	return true
}

// progressTransport arms the upstream read timeout on response bodies and the idle
// timeout on upgraded connections.
type progressTransport struct {
	next        http.RoundTripper
	readTimeout time.Duration
	upgradeIdle time.Duration
}

func (t *progressTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	pw, _ := r.Context().Value(progressKey{}).(*progressWriter)
	if res.StatusCode == http.StatusSwitchingProtocols {
		rwc, ok := res.Body.(io.ReadWriteCloser)
		if !ok {
			return res, nil // ReverseProxy answers that one
		}
		if pw != nil {
			pw.clearClientDeadlines()
		}
		if t.upgradeIdle > 0 {
			res.Body = newIdleTunnel(rwc, t.upgradeIdle, pw)
		}
		return res, nil
	}
	if t.readTimeout <= 0 || res.Body == nil || res.Body == http.NoBody {
		return res, nil
	}
	if _, inline := res.Body.(*inlineBody); inline && pw != nil {
		// The inline path holds the connection and sets a read deadline per read.
		pw.body = upstreamBody{rc: res.Body, w: pw, timeout: t.readTimeout}
		res.Body = &pw.body
	} else if inline {
		res.Body = &upstreamBody{rc: res.Body, timeout: t.readTimeout}
	} else {
		res.Body = newTimedBody(res.Body, pw, t.readTimeout)
	}
	return res, nil
}

// upstreamBody turns a read deadline that passed on an upstream response body into a
// read_timeout cut.
type upstreamBody struct {
	rc      io.ReadCloser
	w       *progressWriter // nil if the request did not come through watchProgress
	timeout time.Duration
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && isTimeout(err) {
		err = b.timedOut()
	}
	return n, err
}

func (b *upstreamBody) timedOut() error {
	err := &progressTimeout{"read the response body from the upstream", b.timeout}
	if b.w != nil {
		b.w.record(ReasonReadTimeout, http.StatusGatewayTimeout, err)
	}
	return err
}

func (b *upstreamBody) Close() error { return b.rc.Close() }

// timedBody is the read timeout for an http.Transport response body, whose connection
// the proxy does not hold: a timer closes the body when a read has waited that long.
type timedBody struct {
	upstreamBody
	timer     *time.Timer
	reading   atomic.Int64 // unix nanoseconds when the read in progress began; 0 between reads
	fired     atomic.Bool
	closed    atomic.Bool // Close ran: the timer must not re-arm itself
	closeOnce sync.Once
	closeErr  error
}

func newTimedBody(rc io.ReadCloser, w *progressWriter, timeout time.Duration) *timedBody {
	b := &timedBody{upstreamBody: upstreamBody{rc: rc, w: w, timeout: timeout}}
	b.timer = time.AfterFunc(timeout, b.check)
	return b
}

// check runs on the timer: it cuts a read that has waited the timeout, or looks again
// when the read in progress (or the next one, between reads) could reach it.
func (b *timedBody) check() {
	if b.closed.Load() {
		return
	}
	began := b.reading.Load()
	if began == 0 {
		// Between reads the proxy is writing to the client (its own timeout); look
		// again a quarter of the timeout later.
		b.timer.Reset(b.timeout / 4)
		return
	}
	if wait := time.Duration(began + int64(b.timeout) - time.Now().UnixNano()); wait > 0 {
		b.timer.Reset(wait)
		return
	}
	b.fired.Store(true)
	b.closeUnderlying() // the blocked read returns an error
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.fired.Load() {
		return 0, b.timedOut()
	}
	b.reading.Store(time.Now().UnixNano())
	n, err := b.rc.Read(p)
	b.reading.Store(0)
	if err != nil && err != io.EOF && (b.fired.Load() || isTimeout(err)) {
		err = b.timedOut()
	}
	return n, err
}

func (b *timedBody) closeUnderlying() error {
	b.closeOnce.Do(func() { b.closeErr = b.rc.Close() })
	return b.closeErr
}

func (b *timedBody) Close() error {
	b.closed.Store(true)
	b.timer.Stop()
	return b.closeUnderlying()
}

// idleTunnel is the upstream side of an upgraded connection (WebSocket). Both directions
// pass through it (Read: upstream to client, Write: client to upstream), so it sees when
// nothing has moved either way for the idle timeout, and then closes it; ReverseProxy
// then closes the client side too.
type idleTunnel struct {
	io.ReadWriteCloser
	timeout time.Duration
	w       *progressWriter
	last    atomic.Int64 // unix nanoseconds of the last byte moved
	fired   atomic.Bool
	closed  atomic.Bool // Close ran: the timer must not fire or re-arm
	timer   *time.Timer
}

func newIdleTunnel(rwc io.ReadWriteCloser, timeout time.Duration, w *progressWriter) *idleTunnel {
	t := &idleTunnel{ReadWriteCloser: rwc, timeout: timeout, w: w}
	t.last.Store(time.Now().UnixNano())
	t.timer = time.AfterFunc(timeout, t.check)
	return t
}

func (t *idleTunnel) check() {
	if t.closed.Load() {
		return
	}
	if wait := time.Duration(t.last.Load() + int64(t.timeout) - time.Now().UnixNano()); wait > 0 {
		t.timer.Reset(wait)
		return
	}
	t.fired.Store(true)
	if t.w != nil {
		t.w.record(ReasonUpgradeIdleTimeout, http.StatusSwitchingProtocols,
			&progressTimeout{"upgraded connection", t.timeout})
	}
	t.ReadWriteCloser.Close()
}

func (t *idleTunnel) Read(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Read(p)
	if n > 0 {
		t.last.Store(time.Now().UnixNano())
	}
	return n, t.cutErr(err)
}

func (t *idleTunnel) Write(p []byte) (int, error) {
	n, err := t.ReadWriteCloser.Write(p)
	if n > 0 {
		t.last.Store(time.Now().UnixNano())
	}
	return n, t.cutErr(err)
}

func (t *idleTunnel) cutErr(err error) error {
	if err != nil && t.fired.Load() {
		return &progressTimeout{"upgraded connection", t.timeout}
	}
	return err
}

func (t *idleTunnel) Close() error {
	t.closed.Store(true)
	t.timer.Stop()
	return t.ReadWriteCloser.Close()
}

// sendDeadlineConn arms the upstream send timeout before every write of a request to the
// upstream (nginx's proxy_send_timeout): an upstream that stops reading a request body
// fails the exchange (504 before the response headers) instead of holding it.
type sendDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *sendDeadlineConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// NetConn returns the connection underneath.
func (c *sendDeadlineConn) NetConn() net.Conn { return c.Conn }

// SyscallConn reaches the socket through the wrapper.
func (c *sendDeadlineConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// withSendTimeout wraps dial so that its connections arm timeout before every write.
func withSendTimeout(dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if timeout <= 0 {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &sendDeadlineConn{Conn: c, timeout: timeout}, nil
	}
}

// extendReadDeadline gives the next read on the inline path's connection d from now,
// unless the request's end has poisoned the deadline.
func (uc *upConn) extendReadDeadline(d time.Duration) {
	uc.mu.Lock()
	if !uc.poisoned {
		uc.c.SetReadDeadline(time.Now().Add(d))
	}
	uc.mu.Unlock()
}
