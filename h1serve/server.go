// Package h1serve is an HTTP/1 connection loop of drainproxy's own that serves any
// http.Handler, built to carry httputil.ReverseProxy with less per-request cost than
// net/http's server loop.
//
// It parses requests with net/http's public parser (http.ReadRequest) and adds the checks
// net/http's Server makes on top of it (Host rules, the header size limit, Expect,
// Connection and HTTP/1.0 keep-alive semantics, the bounded drain of an unread request
// body). It writes responses the way net/http does, byte for byte: the differential
// oracle in oracle_test.go sends the same request streams to both and lists every
// difference it allows, with its reason.
//
// What it does differently, on purpose:
//   - No background read on every request. A client that went away is noticed when a
//     write to it fails, or, for a request still running after WatchDelay with its body
//     read, by one read on the connection that reports a reset.
//   - A client that half-closes (FIN after a complete request) does not cancel the
//     request: it gets its answer, then the connection closes. net/http cancels it.
//   - No read or write buffer is held while a connection is idle between requests: the
//     loop waits for the next request with a one-byte read and takes its buffers from
//     sync.Pools only once bytes arrive.
//
// It keeps the hooks a server needs to be drained as net/http's is (package drain):
// ConnState, BaseContext and ConnContext, Close, the read, write, head and idle
// timeouts; it hands HTTP/2 (ALPN h2, h2c with prior knowledge) to ServeHTTP2.
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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultWatchDelay is how long a request runs, with its body fully read, before the
// loop arms a read that notices a client reset.
const DefaultWatchDelay = 5 * time.Millisecond

// Server serves HTTP/1 connections with Handler. The zero value of every field other
// than Handler is usable.
type Server struct {
	// Handler answers every request.
	Handler http.Handler

	// MaxHeaderBytes caps the request line and headers; more is answered with 431 and
	// the connection closes. Zero means http.DefaultMaxHeaderBytes (1 MiB), as net/http.
	MaxHeaderBytes int

	// ReadHeaderTimeout bounds the time from a request's first byte to the end of its
	// headers. Zero means no limit.
	ReadHeaderTimeout time.Duration

	// IdleTimeout closes a keep-alive connection that waits this long for its next
	// request. Zero means ReadTimeout, as in net/http (and no limit when both are zero).
	IdleTimeout time.Duration

	// ReadTimeout bounds reading a whole request, head and body, from its first byte;
	// it also bounds the head when ReadHeaderTimeout is zero, as in net/http. Zero means
	// no limit.
	ReadTimeout time.Duration

	// WriteTimeout bounds writing a response, from the end of its request's head, as in
	// net/http. Zero means no limit.
	WriteTimeout time.Duration

	// ConnState, when set, is called as a connection changes state, as
	// http.Server.ConnState is: StateNew before Serve starts serving it, then on the
	// connection's own goroutine and in order. One difference: a connection turns
	// StateActive as soon as the first bytes of a request arrive, where net/http waits
	// for the whole head. h1serve reads those bytes from the socket itself, past any
	// net.Conn wrapper that would notice them, so reporting them at once is what keeps a
	// connection whose request is on its way from being closed as idle (by a drain, or
	// to make room under a connection limit). A connection handed to ServeHTTP2 is
	// reported StateNew and StateClosed only, as net/http does.
	ConnState func(net.Conn, http.ConnState)

	// BaseContext, when set, returns the parent context of every connection Serve
	// accepts on ln, as http.Server.BaseContext (zero: context.Background()).
	BaseContext func(ln net.Listener) context.Context

	// ConnContext, when set, derives a connection's context, the parent of its
	// requests' contexts, from the base one, as http.Server.ConnContext.
	ConnContext func(ctx context.Context, c net.Conn) context.Context

	// ServeHTTP2, when set, takes over the connections that speak HTTP/2: a TLS one
	// whose client chose "h2" by ALPN (c is tc), and, with H2C, a plain one that opened
	// with the HTTP/2 client preface (prior knowledge), which has been read: c replays
	// the bytes that came after it. ctx is the connection's context. It returns when the
	// connection is done. Without it, a TLS connection that negotiated "h2" is closed
	// (net/http closes one that negotiated a protocol it has no handler for).
	ServeHTTP2 func(ctx context.Context, c net.Conn, tc *tls.Conn)

	// H2C hands plain connections that open with the HTTP/2 preface to ServeHTTP2.
	H2C bool

	// CancelOnFIN ends a running request's context when its client's FIN arrives, as
	// net/http does, for a handler that tells a client that half-closed from one that
	// went away by itself (drainproxy's proxy asks the kernel, proxy/halfclose.go).
	// Without it a FIN cancels nothing, and a client that closed its connection is
	// noticed only when a write to it fails.
	CancelOnFIN bool

	// DisableGeneralOptionsHandler passes "OPTIONS *" to Handler, as the field of the
	// same name in http.Server; otherwise the loop answers it itself, as net/http does.
	DisableGeneralOptionsHandler bool

	// WatchDelay is how long a request runs with its body read before the loop watches
	// the connection for a client reset. Zero means DefaultWatchDelay; negative turns
	// the watch off (a gone client is then noticed only when a write fails).
	WatchDelay time.Duration

	// ErrorLog receives handler panics and writer misuse. Nil means the log package's
	// standard logger.
	ErrorLog *log.Logger

	// idleHook, for tests, is called when a connection starts to wait for its next
	// request, with whether it still holds a read and a write buffer.
	idleHook func(reader, writer bool)

	viewOnce sync.Once
	view     *http.Server // see netHTTPView

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Close. It is net/http's, so that code
// that serves either server checks one error.
var ErrServerClosed = http.ErrServerClosed

// Serve accepts connections on ln and serves each on its own goroutine until Close. It
// always returns a non-nil error; after Close it is ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	base := context.Background()
	if s.BaseContext != nil {
		if base = s.BaseContext(ln); base == nil {
			panic("h1serve: BaseContext returned a nil context")
		}
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !s.track(c, true) {
			c.Close()
			return ErrServerClosed
		}
		s.setState(c, http.StateNew) // before the goroutine, so that a count of open connections never misses it
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			ctx := base
			if s.ConnContext != nil {
				if ctx = s.ConnContext(ctx, c); ctx == nil {
					panic("h1serve: ConnContext returned a nil context")
				}
			}
			s.ServeConn(ctx, c)
		}()
	}
}

// track adds or removes a connection from the set Close closes. It reports false when
// the server is closed and c was not added.
func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// Close closes the listeners and every connection Serve started, at once, as
// http.Server.Close: it does not wait for handlers still running on them (their writes
// and reads fail). Hijacked connections are the hijacker's to close.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return nil
}

// netHTTPView is an http.Server with s's handler and limits, which serves nothing: the
// value of http.ServerContextKey in the requests' contexts. Code that looks for it must
// find one: httputil.ReverseProxy aborts a response whose upstream body broke off
// (panic(http.ErrAbortHandler), so the client sees the cut) only when it runs under a
// server, and would otherwise end a cut-short chunked body as if it were complete.
func (s *Server) netHTTPView() *http.Server {
	s.viewOnce.Do(func() {
		s.view = &http.Server{
			Handler: s.Handler, ReadHeaderTimeout: s.ReadHeaderTimeout, ReadTimeout: s.ReadTimeout,
			WriteTimeout: s.WriteTimeout, IdleTimeout: s.IdleTimeout, MaxHeaderBytes: s.MaxHeaderBytes,
			ErrorLog: s.ErrorLog, DisableGeneralOptionsHandler: s.DisableGeneralOptionsHandler,
		}
	})
	return s.view
}

// Hooks returns where s keeps its ConnState and BaseContext hooks, for a caller that
// chains its own (package drain, which serves net/http's servers the same way).
func (s *Server) Hooks() (connState *func(net.Conn, http.ConnState), baseContext *func(net.Listener) context.Context) {
	return &s.ConnState, &s.BaseContext
}

func (s *Server) setState(c net.Conn, st http.ConnState) {
	if s.ConnState != nil {
		s.ConnState(c, st)
	}
}

// readHeaderTimeout and idleTimeout fall back on ReadTimeout, as net/http's do.
func (s *Server) readHeaderTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return s.ReadTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return s.ReadTimeout
}

// handshakeTimeout is net/http's: the shortest of the read and write limits.
func (s *Server) handshakeTimeout() time.Duration {
	var d time.Duration
	for _, v := range [...]time.Duration{s.ReadTimeout, s.WriteTimeout, s.ReadHeaderTimeout} {
		if v > 0 && (d == 0 || v < d) {
			d = v
		}
	}
	return d
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// ServeConn serves HTTP/1 requests on c until the client or the handler ends the
// connection, then closes it (unless a handler hijacked it) and reports it StateClosed.
// ctx is the parent of every request's context.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	cn := &conn{srv: s, rwc: c, remoteAddr: c.RemoteAddr().String()}
	closed := true
	defer func() {
		if closed {
			s.setState(c, http.StateClosed)
		}
	}()
	cn.cr.c = cn
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			cn.raw, cn.rawRead = raw, cn.readRaw
		}
	}
	if tc, ok := c.(*tls.Conn); ok {
		// As net/http: finish the handshake first, so that requests see its state.
		// (Handing a negotiated h2 to h2serve is the caller's job, before ServeConn.)
		if d := s.handshakeTimeout(); d > 0 {
			c.SetDeadline(time.Now().Add(d))
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			// As net/http: a client that spoke plain HTTP to a TLS listener is told so.
			var re tls.RecordHeaderError
			if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
				io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			}
			c.Close()
			return
		}
		c.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		cn.tlsState = &st
		if p := st.NegotiatedProtocol; p != "" && p != "http/1.1" && p != "http/1.0" {
			if p == "h2" && s.ServeHTTP2 != nil {
				s.ServeHTTP2(context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr()), tc, tc)
			}
			c.Close()
			return
		}
	}
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.LocalAddr())
	ctx = context.WithValue(ctx, http.ServerContextKey, s.netHTTPView())
	cn.serve(ctx)
	closed = !cn.hijacked
}

// conn is one client connection. Its buffers (br, bw) are non-nil only while a request
// is being read or answered.
type conn struct {
	srv        *Server
	rwc        net.Conn
	remoteAddr string
	tlsState   *tls.ConnectionState
	cr         connReader
	raw        syscall.RawConn // nil unless rwc is a plain socket (not TLS)
	rawRead    func(fd uintptr) bool
	rawBuf     *[]byte
	rawN       int
	rawErr     error
	br         *bufio.Reader
	bw         *bufio.Writer
	lastMethod string
	hijacked   bool
	t0         time.Time // when the first bytes of the current request came
	served     bool      // a request was read: later ones wait for 4 bytes, as net/http

	// deadlineSet and writeDeadlineSet say a deadline may be set on rwc that the next
	// request must not inherit.
	deadlineSet      bool
	writeDeadlineSet bool

	// werr is the first write error; it cancels the running request.
	werr   error
	cancel context.CancelFunc

	// watch state: see armWatch.
	watchMu      sync.Mutex
	watchTimer   *time.Timer
	watchReq     *response // the request the timer is armed for; nil once it is done
	watchWanted  bool      // the timer fired while the body was still being read
	watchRunning bool
	watchDone    chan struct{}
}

const (
	maxPostHandlerReadBytes = 256 << 10
	bufferBeforeChunking    = 2048
	connBufSize             = 4 << 10
	// prefetchSize is what the idle wait reads at once: most request heads fit, and the
	// pooled buffer, which lives beside the 4 KiB reader until the reader took its
	// bytes, costs less under many busy connections than a second 4 KiB would.
	prefetchSize = 1 << 10
)

var (
	readerPool   sync.Pool // *bufio.Reader, connBufSize
	writerPool   sync.Pool // *bufio.Writer, connBufSize
	chunkPool    sync.Pool // *bufio.Writer, bufferBeforeChunking
	recordPool   sync.Pool // *[]byte, the raw request head (see readRequest)
	prefetchPool sync.Pool // *[]byte, prefetchSize: what awaitRaw read
	aLongTimeAgo = time.Unix(1, 0)
	errTooLarge  = errors.New("h1serve: request head too large")
)

func getWriter(pool *sync.Pool, w io.Writer, size int) *bufio.Writer {
	if bw, ok := pool.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, size)
}

func putWriter(pool *sync.Pool, bw *bufio.Writer) {
	bw.Reset(nil)
	pool.Put(bw)
}

// take gets the connection's buffers from the pools for one request.
func (c *conn) take() {
	if c.br == nil {
		if br, ok := readerPool.Get().(*bufio.Reader); ok {
			br.Reset(&c.cr)
			c.br = br
		} else {
			c.br = bufio.NewReaderSize(&c.cr, connBufSize)
		}
	}
	if c.bw == nil {
		c.bw = getWriter(&writerPool, errWriter{c}, connBufSize)
	}
}

// release returns the buffers to the pools: the writer always (after a flush), the
// reader only when it holds no pipelined bytes.
func (c *conn) release() {
	if c.bw != nil {
		c.bw.Flush()
		putWriter(&writerPool, c.bw)
		c.bw = nil
	}
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
}

// errWriter writes to the client and remembers the first failure, which cancels the
// request: a failed write is how the loop learns, at no cost, that a client went away.
type errWriter struct{ c *conn }

func (w errWriter) Write(p []byte) (int, error) {
	n, err := w.c.rwc.Write(p)
	if err != nil && w.c.werr == nil {
		w.c.werr = err
		if w.c.cancel != nil {
			w.c.cancel()
		}
	}
	return n, err
}

// connReader is what the bufio.Reader reads from: the connection, preceded by the byte
// the idle wait read, limited while a request head is read, and recorded while it is
// (so that the Host rules http.ReadRequest hides can be checked, see hostCheck).
type connReader struct {
	c       *conn
	stash   [1]byte
	stashed bool
	pre     []byte  // bytes the idle wait read, not yet passed on
	preBuf  *[]byte // the pooled buffer pre is in
	remain  int64
	rec     *[]byte
	// cancelOnErr is set while the handler may read the request body: a read error
	// there (a reset, or a FIN in the middle of the body) cancels the request, as in
	// net/http. The watch's read does not cancel on a FIN.
	cancelOnErr bool
}

func (cr *connReader) Read(p []byte) (int, error) {
	if cr.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	var n int
	var err error
	switch {
	case len(cr.pre) > 0:
		n = copy(p, cr.pre)
		cr.pre = cr.pre[n:]
		if len(cr.pre) == 0 {
			prefetchPool.Put(cr.preBuf)
			cr.preBuf = nil
		}
	case cr.stashed:
		p[0] = cr.stash[0]
		cr.stashed = false
		n = 1
	default:
		n, err = cr.c.rwc.Read(p)
	}
	cr.remain -= int64(n)
	if err != nil && cr.cancelOnErr && cr.c.cancel != nil {
		cr.c.cancel()
	}
	if cr.rec != nil {
		*cr.rec = append(*cr.rec, p[:n]...)
	}
	return n, err
}

const noLimit = 1<<63 - 1

func (s *Server) headLimit() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes) + 4096 // as net/http: bufio slack
	}
	return http.DefaultMaxHeaderBytes + 4096
}

func (c *conn) serve(ctx context.Context) {
	var w *response
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.srv.logf("h1serve: panic serving %v: %v\n%s", c.remoteAddr, v, buf)
		}
		if w != nil {
			w.cancel()
			w.disableWriteContinue()
		}
		if c.hijacked {
			return
		}
		if w != nil {
			c.stopWatch()
			w.body.Close()
		}
		c.release()
		c.rwc.Close()
		if c.cr.preBuf != nil {
			prefetchPool.Put(c.cr.preBuf)
			c.cr.preBuf, c.cr.pre = nil, nil
		}
	}()
	for {
		if c.served {
			c.srv.setState(c.rwc, http.StateIdle)
		}
		first := !c.served
		if !c.awaitRequest() {
			return
		}
		if first && c.srv.H2C && c.srv.ServeHTTP2 != nil && c.tlsState == nil && c.servedHTTP2(ctx) {
			return // HTTP/2 has served the connection, and closed it
		}
		c.srv.setState(c.rwc, http.StateActive)
		var err error
		w, err = c.readRequest(ctx)
		if err != nil {
			c.answerReadError(err)
			return
		}
		req := w.req
		if hasToken(headerGet(req.Header, "Expect"), "100-continue") {
			if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
				w.body.expectContinue = true
				w.canWriteContinue = true
			}
		} else if headerGet(req.Header, "Expect") != "" {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusExpectationFailed)
			w.finishRequest()
			return
		}
		handler := c.srv.Handler
		if req.RequestURI == "*" && req.Method == "OPTIONS" && !c.srv.DisableGeneralOptionsHandler {
			handler = optionsHandler
		}
		c.armWatch(w)
		handler.ServeHTTP(w, req)
		w.cancel()
		if c.hijacked {
			return
		}
		w.finishRequest()
		if !w.shouldReuseConnection() {
			if w.requestBodyLimitHit || w.body.earlyClose {
				c.closeWriteAndWait()
			}
			w = nil
			return
		}
		w = nil
		c.release()
	}
}

// awaitRequest waits for the first byte of the next request without holding a buffer
// (unless pipelined bytes are already buffered), then arms the head timeout.
func (c *conn) awaitRequest() bool {
	if h := c.srv.idleHook; h != nil {
		h(c.br != nil, c.bw != nil)
	}
	if c.br == nil {
		if d := c.srv.idleTimeout(); d > 0 {
			c.rwc.SetReadDeadline(time.Now().Add(d))
			c.deadlineSet = true
		} else if c.deadlineSet {
			c.rwc.SetReadDeadline(time.Time{})
			c.deadlineSet = false
		}
		if c.raw != nil {
			if !c.awaitRaw() {
				return false
			}
		} else {
			if n, _ := c.rwc.Read(c.cr.stash[:]); n == 0 {
				return false
			}
			c.cr.stashed = true
		}
	}
	if c.served {
		// As net/http: a later request begins only once 4 bytes came (a stream that
		// ends sooner gets no answer).
		c.take()
		if _, err := c.br.Peek(4); err != nil {
			return false
		}
	}
	c.served = true
	c.t0 = time.Now()
	if d := c.srv.readHeaderTimeout(); d > 0 {
		c.rwc.SetReadDeadline(c.t0.Add(d))
		c.deadlineSet = true
	} else if c.deadlineSet {
		c.rwc.SetReadDeadline(time.Time{})
		c.deadlineSet = false
	}
	return true
}

// looksLikeHTTP is net/http's guess that the first bytes of a TLS record are plain HTTP.
func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// http2Preface is what an HTTP/2 client with prior knowledge sends first; net/http looks
// for its first line before it reads more.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// servedHTTP2 hands the connection to ServeHTTP2 if it opened with the HTTP/2 preface,
// as net/http does for unencrypted HTTP/2, and reports whether it did.
func (c *conn) servedHTTP2(ctx context.Context) bool {
	c.take()
	c.cr.remain = int64(len(http2Preface))
	line, err := c.br.Peek(len("PRI * HTTP/2.0"))
	if err != nil || string(line) != http2Preface[:len(line)] {
		return false
	}
	if all, err := c.br.Peek(len(http2Preface)); err != nil || string(all) != http2Preface {
		return false
	}
	c.br.Discard(len(http2Preface))
	rest := &replayConn{Conn: c.rwc}
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		rest.rest = append(rest.rest, b...)
		c.br.Discard(n)
	}
	rest.rest = append(rest.rest, c.cr.pre...)
	if c.cr.preBuf != nil {
		prefetchPool.Put(c.cr.preBuf)
		c.cr.preBuf, c.cr.pre = nil, nil
	}
	c.release()
	c.rwc.SetDeadline(time.Time{})
	c.deadlineSet = false
	c.srv.ServeHTTP2(ctx, rest, nil)
	return true
}

// replayConn is a connection handed to HTTP/2 with the bytes read past the preface.
type replayConn struct {
	net.Conn
	rest []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.rest) > 0 {
		n := copy(p, r.rest)
		r.rest = r.rest[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// NetConn is the connection underneath, as tls.Conn.NetConn (for a connection limit
// and TCP_INFO).
func (r *replayConn) NetConn() net.Conn { return r.Conn }

// awaitRaw waits for the connection to become readable with no buffer, then reads what
// came into a pooled buffer that is returned as soon as the request's reader took it:
// one read system call per request, the same as a buffered read, where a one-byte wait
// would cost two.
func (c *conn) awaitRaw() bool {
	err := c.raw.Read(c.rawRead)
	buf, n, rerr := c.rawBuf, c.rawN, c.rawErr
	c.rawBuf, c.rawErr = nil, nil
	if err != nil || rerr != nil || n <= 0 {
		if buf != nil {
			prefetchPool.Put(buf)
		}
		return false
	}
	c.cr.pre, c.cr.preBuf = (*buf)[:n], buf
	return true
}

// readRaw is the syscall.RawConn read of awaitRaw (a method value made once per
// connection, so that the wait allocates nothing).
func (c *conn) readRaw(fd uintptr) bool {
	for {
		if c.rawBuf == nil {
			c.rawBuf = getPrefetch()
		}
		c.rawN, c.rawErr = syscall.Read(int(fd), *c.rawBuf)
		switch c.rawErr {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			prefetchPool.Put(c.rawBuf)
			c.rawBuf = nil
			return false // park until readable, holding nothing
		}
		return true
	}
}

func getPrefetch() *[]byte {
	if b, ok := prefetchPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, prefetchSize)
	return &b
}

func (c *conn) closeWriteAndWait() {
	c.release()
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	// As net/http: give the client a moment to read our answer before the close may
	// send a reset; unlike net/http, stop waiting as soon as the client closes too.
	c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, c.rwc)
}

// answerReadError writes the answer net/http's server writes for a request it could
// not read, byte for byte.
func (c *conn) answerReadError(err error) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	switch {
	case err == errTooLarge:
		const publicErr = "431 Request Header Fields Too Large"
		io.WriteString(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
		c.closeWriteAndWait()
	case isUnsupportedTE(err):
		io.WriteString(c.rwc, "HTTP/1.1 501 Not Implemented"+errorHeaders+"Unsupported transfer encoding")
	case isCommonNetReadError(err):
		// the client went away or timed out: no answer, as net/http
	case errors.As(err, new(statusError)):
		se := err.(statusError)
		text := strconv.Itoa(se.code) + " " + http.StatusText(se.code) + ": " + se.text
		io.WriteString(c.rwc, "HTTP/1.1 "+text+errorHeaders+text)
	default:
		const publicErr = "400 Bad Request"
		io.WriteString(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
	}
}

// isUnsupportedTE recognises net/http's unexported unsupported transfer-encoding error
// by its two texts, the only public trace of it.
func isUnsupportedTE(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unsupported transfer encoding: ") || strings.HasPrefix(s, "too many transfer encodings: ")
}

// isCommonNetReadError is net/http's test for a read error that gets no answer.
func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return true
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "read" {
		return true
	}
	return false
}

// optionsHandler answers "OPTIONS *" as net/http's server does in place of the handler.
var optionsHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
})
