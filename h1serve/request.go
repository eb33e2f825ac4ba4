package h1serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// statusError is a request net/http's server refuses with its own text, which the loop
// writes in the same words.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return e.text }

func badRequest(text string) error { return statusError{http.StatusBadRequest, text} }

// readRequest reads the next request head with http.ReadRequest and makes net/http's
// server checks on it.
func (c *conn) readRequest(ctx context.Context) (*response, error) {
	c.take()
	c.cr.remain = c.srv.headLimit()
	if c.lastMethod == "POST" {
		// RFC 7230 section 3: tolerate the CRLF old clients send after a POST body.
		peek, _ := c.br.Peek(4)
		c.br.Discard(numLeadingCRorLF(peek))
	}
	// Record the raw head: http.ReadRequest drops the Host header, and net/http's
	// server decides on its presence and value, which req.Host alone does not tell
	// when it is empty or when the target is in absolute form.
	rec, _ := recordPool.Get().(*[]byte)
	if rec == nil {
		rec = new([]byte)
	}
	buffered, _ := c.br.Peek(c.br.Buffered())
	*rec = append((*rec)[:0], buffered...)
	c.cr.rec = rec
	req, err := http.ReadRequest(c.br)
	c.cr.rec = nil
	defer func() {
		if cap(*rec) <= 64<<10 {
			recordPool.Put(rec)
		}
	}()
	if err != nil {
		if c.cr.remain <= 0 {
			return nil, errTooLarge
		}
		return nil, err
	}
	if req.ProtoMajor != 1 && (req.ProtoMajor != 2 || req.ProtoMinor != 0 || req.Method != "PRI" || req.RequestURI != "*") {
		return nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	c.lastMethod = req.Method
	c.cr.remain = noLimit

	hosts, haveHost := []string{req.Host}, true
	isH2Upgrade := false
	if req.Host == "" || req.URL.Host != "" || req.Method == "PRI" {
		var head http.Header
		hosts, haveHost, head = rawHosts(*rec)
		isH2Upgrade = req.Method == "PRI" && len(head) == 0 && req.URL.Path == "*" && req.Proto == "HTTP/2.0"
	}
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && !isH2Upgrade && req.Method != "CONNECT" {
		return nil, badRequest("missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, badRequest("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, badRequest("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, badRequest("invalid header value")
			}
		}
	}

	// As net/http: the body may take until ReadTimeout from the request's first byte;
	// the response until WriteTimeout from now.
	if d := c.srv.ReadTimeout; d > 0 {
		c.rwc.SetReadDeadline(c.t0.Add(d))
		c.deadlineSet = true
	} else if c.deadlineSet {
		c.rwc.SetReadDeadline(time.Time{})
		c.deadlineSet = false
	}
	if d := c.srv.WriteTimeout; d > 0 {
		c.rwc.SetWriteDeadline(time.Now().Add(d))
		c.writeDeadlineSet = true
	}
	ctx, cancel := context.WithCancel(ctx)
	parsed := req
	req = req.WithContext(ctx)
	req.RemoteAddr = c.remoteAddr
	req.TLS = c.tlsState
	w := &response{
		c:             c,
		req:           req,
		cancel:        cancel,
		handlerHeader: make(http.Header),
		contentLength: -1,
		// decided before the handler may change the request's header, as net/http
		wants10KeepAlive: req.ProtoMajor == 1 && req.ProtoMinor == 0 && hasToken(headerGet(req.Header, "Connection"), "keep-alive"),
		wantsClose:       req.Close || hasToken(headerGet(req.Header, "Connection"), "close"),
		closeAfterReply:  isH2Upgrade,
	}
	c.cancel = cancel
	c.cr.cancelOnErr = true
	w.body = &w.bodyv
	w.bodyv.w = w
	w.bodyv.inner = req.Body
	w.bodyv.parsed = parsed
	if req.Body == http.NoBody || req.Body == nil {
		w.bodyv.sawEOF.Store(true)
	} else {
		w.bodyv.remaining = -1
		if len(req.TransferEncoding) == 0 {
			w.bodyv.remaining = req.ContentLength
		}
		req.Body = w.body
	}
	w.cw.res = w
	w.w = getWriter(&chunkPool, &w.cw, bufferBeforeChunking)
	return w, nil
}

// rawHosts parses the recorded head again for its Host lines. It runs only for the rare
// requests whose req.Host leaves the answer open.
func rawHosts(rec []byte) (hosts []string, have bool, head http.Header) {
	i := bytes.IndexByte(rec, '\n')
	if i < 0 {
		return nil, false, nil
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(rec[i+1:]))).ReadMIMEHeader()
	if err != nil {
		return nil, false, nil
	}
	hosts, have = h["Host"]
	return hosts, have, http.Header(h)
}

func numLeadingCRorLF(v []byte) (n int) {
	for _, b := range v {
		if b == '\r' || b == '\n' {
			n++
			continue
		}
		break
	}
	return
}

// headerGet is h's first value for an already canonical key, as net/http's Header.get.
func headerGet(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// hasToken reports whether token appears in v as net/http's server reads Connection
// and Expect: case-insensitively, bounded by space, tab or comma.
func hasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if b := v[sp]; b != token[0] && b|0x20 != token[0] {
			continue
		}
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !isTokenBoundary(v[end]) {
			continue
		}
		if equalFoldASCII(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// reqBody is the request body the handler reads. Its Close drains at most 256 KiB, as
// net/http's server does (http.ReadRequest's body would drain without bound), and it
// tells the watch when the body is done, so that the connection can be read again.
type reqBody struct {
	w              *response
	inner          io.ReadCloser
	parsed         *http.Request // the request http.ReadRequest made; its body sets its Trailer
	mu             sync.Mutex
	remaining      int64 // unread bytes of a Content-Length body; -1 when unknown
	sawEOF         atomic.Bool
	closed         bool
	earlyClose     bool // closed with more than 256 KiB unread: the connection cannot be reused
	expectContinue bool // the client waits for 100 Continue before it sends the body
}

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.expectContinue {
		b.w.writeContinue()
	}
	return b.readLocked(p)
}

func (b *reqBody) readLocked(p []byte) (int, error) {
	if b.sawEOF.Load() {
		return 0, io.EOF
	}
	n, err := b.inner.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
	}
	switch {
	case err == io.EOF:
		// The body merged the trailers into the parsed request, of which the handler
		// has a copy (WithContext): a map it did not have yet must be passed on.
		if b.w.req.Trailer == nil {
			b.w.req.Trailer = b.parsed.Trailer
		}
		b.sawEOF.Store(true)
		b.w.c.bodyDone()
	case err != nil:
		// net/http's body closes itself on a malformed trailer; find out, since a
		// closed body that did not reach its end keeps the connection from reuse.
		if _, e := b.inner.Read(nil); e == http.ErrBodyReadAfterClose {
			b.closed = true
		}
	}
	return n, err
}

type lockedBody struct{ b *reqBody }

func (l lockedBody) Read(p []byte) (int, error) { return l.b.readLocked(p) }

func (b *reqBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	switch {
	case b.sawEOF.Load():
		return nil
	case b.remaining > maxPostHandlerReadBytes:
		b.earlyClose = true
		return nil
	}
	n, err := io.CopyN(io.Discard, lockedBody{b}, maxPostHandlerReadBytes)
	if err == io.EOF {
		err = nil
	}
	if n == maxPostHandlerReadBytes {
		b.earlyClose = true
	}
	return err
}

// armWatch starts the timer after which a still running request, its body read, has
// the connection watched for a client reset. Requests that finish sooner (nearly all
// proxied ones) never pay for a read.
func (c *conn) armWatch(w *response) {
	d := c.srv.WatchDelay
	if d < 0 {
		return
	}
	if d == 0 {
		d = DefaultWatchDelay
	}
	c.watchMu.Lock()
	c.watchReq, c.watchWanted, c.watchRunning = w, false, false
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(d, c.watchFired)
	} else {
		c.watchTimer.Reset(d)
	}
	c.watchMu.Unlock()
}

func (c *conn) watchFired() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	w := c.watchReq
	if w == nil || c.watchRunning {
		return
	}
	if !w.body.sawEOF.Load() {
		c.watchWanted = true // bodyDone starts it
		return
	}
	c.startWatchLocked()
}

// bodyDone is called when the handler has read the request body to its end.
func (c *conn) bodyDone() {
	c.watchMu.Lock()
	if c.watchWanted && c.watchReq != nil && !c.watchRunning {
		c.startWatchLocked()
	}
	c.watchMu.Unlock()
}

// startWatchLocked reads the connection until the request ends. Bytes that arrive are
// the next pipelined request and stay buffered; a FIN is a half-close and cancels
// nothing (the answer still goes out) unless CancelOnFIN; any other read error means the
// client is gone and cancels the request.
func (c *conn) startWatchLocked() {
	c.watchRunning = true
	c.cr.cancelOnErr = false
	done := make(chan struct{})
	c.watchDone = done
	w, br, fin := c.watchReq, c.br, c.srv.CancelOnFIN
	go func() {
		defer close(done)
		_, err := br.Peek(1)
		var ne net.Error
		if err == nil || (err == io.EOF && !fin) || (errors.As(err, &ne) && ne.Timeout()) {
			return
		}
		w.cancel()
	}()
}

// stopWatch ends the watch of the current request and waits for its read to return.
func (c *conn) stopWatch() {
	c.watchMu.Lock()
	c.watchReq = nil
	if c.watchTimer != nil {
		c.watchTimer.Stop()
	}
	running, done := c.watchRunning, c.watchDone
	c.watchRunning, c.watchWanted = false, false
	if running {
		c.rwc.SetReadDeadline(aLongTimeAgo)
	}
	c.watchMu.Unlock()
	if running {
		<-done
		c.rwc.SetReadDeadline(time.Time{})
	}
}
