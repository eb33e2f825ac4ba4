package h1serve

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request. It mirrors net/http's: a 2 KiB
// buffer (w) in front of a chunkWriter that writes the head on its first write and
// frames the body, in front of the connection's 4 KiB buffer; so a body that fits
// 2 KiB when the handler returns gets a Content-Length, a longer one is chunked, with
// the same chunk boundaries as net/http.
type response struct {
	c      *conn
	req    *http.Request
	cancel func()
	body   *reqBody
	bodyv  reqBody

	handlerHeader http.Header
	calledHeader  bool
	wroteHeader   bool // a non-1xx status has been set
	status        int
	written       int64
	contentLength int64 // from the handler's Content-Length, or -1
	handlerDone   bool
	fullDuplex    bool

	wants10KeepAlive    bool
	wantsClose          bool
	closeAfterReply     bool
	requestBodyLimitHit bool

	continueMu       sync.Mutex
	canWriteContinue bool

	trailers []string // declared in the Trailer header

	w  *bufio.Writer
	cw chunkWriter

	dateBuf [len(http.TimeFormat)]byte
	clenBuf [20]byte
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
	_ io.StringWriter     = (*response)(nil)
)

func (w *response) Header() http.Header {
	if w.cw.header == nil && w.wroteHeader && !w.cw.wroteHeader {
		// the handler may change the map after WriteHeader: snapshot it
		w.cw.header = w.handlerHeader.Clone()
	}
	w.calledHeader = true
	return w.handlerHeader
}

func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199, status == 204, status == 304:
		return false
	}
	return true
}

var excludedHeadersNoBody = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

func (w *response) WriteHeader(code int) {
	if w.c.hijacked {
		w.c.srv.logf("h1serve: response.WriteHeader on hijacked connection")
		return
	}
	if w.wroteHeader {
		w.c.srv.logf("h1serve: superfluous response.WriteHeader call")
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 101 || code > 199 {
		w.disableWriteContinue()
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// informational: written at once, the header map stays for the final answer
		writeStatusLine(w.c.bw, w.req.ProtoAtLeast(1, 1), code)
		w.handlerHeader.WriteSubset(w.c.bw, excludedHeadersNoBody)
		w.c.bw.WriteString("\r\n")
		w.c.bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	if w.calledHeader && w.cw.header == nil {
		w.cw.header = w.handlerHeader.Clone()
	}
	if cl := headerGet(w.handlerHeader, "Content-Length"); cl != "" {
		v, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.srv.logf("h1serve: invalid Content-Length of %q", cl)
			w.handlerHeader.Del("Content-Length")
		}
	}
}

func writeStatusLine(bw *bufio.Writer, is11 bool, code int) {
	if is11 {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	if text := http.StatusText(code); text != "" {
		var scratch [3]byte
		bw.Write(strconv.AppendInt(scratch[:0], int64(code), 10))
		bw.WriteByte(' ')
		bw.WriteString(text)
		bw.WriteString("\r\n")
	} else {
		fmt.Fprintf(bw, "%03d status code %d\r\n", code, code)
	}
}

func (w *response) Write(p []byte) (int, error) { return w.write(len(p), p, "") }

func (w *response) WriteString(s string) (int, error) { return w.write(len(s), nil, s) }

func (w *response) write(n int, b []byte, s string) (int, error) {
	if w.c.hijacked {
		if n > 0 {
			w.c.srv.logf("h1serve: response.Write on hijacked connection")
		}
		return 0, http.ErrHijacked
	}
	w.disableWriteContinue()
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if n == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(n)
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	if b != nil {
		return w.w.Write(b)
	}
	return w.w.WriteString(s)
}

// Flush sends what the handler wrote so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush that reports a failed write (http.ResponseController uses it).
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.w.Flush()
	if e2 := w.cw.flush(); err == nil {
		err = e2
	}
	return err
}

// SetReadDeadline is for http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.deadlineSet = true
	return w.c.rwc.SetReadDeadline(t)
}

// SetWriteDeadline is for http.ResponseController.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.writeDeadlineSet = true
	return w.c.rwc.SetWriteDeadline(t)
}

// EnableFullDuplex is for http.ResponseController: the handler may keep reading the
// request body after it started the response, and the loop does not drain it first.
func (w *response) EnableFullDuplex() error {
	w.fullDuplex = true
	return nil
}

// Hijack hands the connection to the handler (ReverseProxy does, for upgrades), with the
// buffered reader that may already hold the client's first bytes.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.handlerDone {
		panic("h1serve: Hijack called after ServeHTTP finished")
	}
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.disableWriteContinue()
	if w.wroteHeader {
		w.cw.flush()
	}
	c.stopWatch()
	c.hijacked = true
	c.srv.track(c.rwc, false) // the hijacker's now: Close leaves it alone, as net/http's
	c.srv.setState(c.rwc, http.StateHijacked)
	c.rwc.SetDeadline(time.Time{})
	putWriter(&chunkPool, w.w)
	w.w = nil
	c.bw.Reset(c.rwc)
	return c.rwc, bufio.NewReadWriter(c.br, c.bw), nil
}

func (w *response) writeContinue() {
	w.continueMu.Lock()
	if w.canWriteContinue {
		w.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		w.c.bw.Flush()
		w.canWriteContinue = false
	}
	w.continueMu.Unlock()
}

// disableWriteContinue stops a later body read from sending 100 Continue, and waits for
// one being written.
func (w *response) disableWriteContinue() {
	w.continueMu.Lock()
	w.canWriteContinue = false
	w.continueMu.Unlock()
}

func (w *response) declareTrailer(k string) {
	k = http.CanonicalHeaderKey(k)
	if !httpguts.ValidTrailerHeader(k) {
		return
	}
	w.trailers = append(w.trailers, k)
}

func (w *response) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.handlerHeader {
		if kk, found := strings.CutPrefix(k, http.TrailerPrefix); found {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range w.trailers {
		if t == nil {
			t = make(http.Header)
		}
		for _, v := range w.handlerHeader[k] {
			t.Add(k, v)
		}
	}
	return t
}

func (w *response) requestTooLarge() {
	w.closeAfterReply = true
	w.requestBodyLimitHit = true
	if !w.wroteHeader {
		w.Header().Set("Connection", "close")
	}
}

// finishRequest writes what the handler left: the head if it wrote none, the buffered
// body, the last chunk and trailers; then it ends the watch and closes the body.
func (w *response) finishRequest() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.w.Flush()
	putWriter(&chunkPool, w.w)
	w.w = nil
	w.cw.close()
	w.c.bw.Flush()
	w.c.stopWatch()
	w.c.cr.cancelOnErr = false
	w.body.Close()
	if w.c.writeDeadlineSet {
		w.c.rwc.SetWriteDeadline(time.Time{})
		w.c.writeDeadlineSet = false
	}
}

func (w *response) shouldReuseConnection() bool {
	if w.closeAfterReply {
		return false
	}
	if w.req.Method != "HEAD" && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false // wrote less than it declared: the client would be out of step
	}
	if w.c.werr != nil {
		return false
	}
	return !w.body.earlyClose
}

// chunkWriter writes the response head on the first write and frames the body.
type chunkWriter struct {
	res         *response
	header      http.Header // snapshot of the handler's header at WriteHeader, if it could change
	wroteHeader bool
	chunking    bool
}

func (cw *chunkWriter) Write(p []byte) (int, error) {
	if !cw.wroteHeader {
		cw.writeHeader(p)
	}
	if cw.res.req.Method == "HEAD" {
		return len(p), nil
	}
	bw := cw.res.c.bw
	if cw.chunking {
		var hex [16]byte
		bw.Write(strconv.AppendInt(hex[:0], int64(len(p)), 16))
		if _, err := bw.WriteString("\r\n"); err != nil {
			cw.res.c.rwc.Close()
			return 0, err
		}
	}
	n, err := bw.Write(p)
	if cw.chunking && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		cw.res.c.rwc.Close()
	}
	return n, err
}

func (cw *chunkWriter) flush() error {
	if !cw.wroteHeader {
		cw.writeHeader(nil)
	}
	return cw.res.c.bw.Flush()
}

func (cw *chunkWriter) close() {
	if !cw.wroteHeader {
		cw.writeHeader(nil)
	}
	if cw.chunking {
		bw := cw.res.c.bw
		bw.WriteString("0\r\n")
		if t := cw.res.finalTrailers(); t != nil {
			t.Write(bw)
		}
		bw.WriteString("\r\n")
	}
}

// head is the response head as writeHeader builds it: the handler's header (or the
// snapshot taken at WriteHeader), the keys left out of it, and the fields added.
type head struct {
	header  http.Header
	owned   bool // header is the snapshot: delete from it directly
	exclude map[string]bool
	extra   extraHeader
}

// del leaves key out of the head without touching the handler's header.
func (h *head) del(key string) {
	if h.owned {
		h.header.Del(key)
		return
	}
	if _, ok := h.header[key]; !ok {
		return
	}
	h.leaveOut(key)
}

func (h *head) leaveOut(key string) {
	if h.exclude == nil {
		h.exclude = make(map[string]bool)
	}
	h.exclude[key] = true
}

// writeHeader decides the framing and connection reuse and writes the head, with the
// same rules (and the same header order) as net/http's server. p is the first body
// bytes, or all of them when the handler has returned.
func (cw *chunkWriter) writeHeader(p []byte) {
	if cw.wroteHeader {
		return
	}
	cw.wroteHeader = true
	w := cw.res
	isHEAD := w.req.Method == "HEAD"

	h := &head{header: cw.header, owned: cw.header != nil}
	if !h.owned {
		h.header = w.handlerHeader
	}
	trailers := cw.declareTrailers(h)

	te := headerGet(h.header, "Transfer-Encoding")
	hasTE := te != ""
	_, haveCL := h.header["Content-Length"]
	if w.handlerDone && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !haveCL && (!isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		h.extra.contentLength = strconv.AppendInt(w.clenBuf[:0], int64(len(p)), 10)
	}
	hasCL := w.contentLength != -1
	w.decideReuse(h, isHEAD, hasCL)
	w.discardUnreadBody(h)

	code := w.status
	if bodyAllowedForStatus(code) {
		_, haveType := h.header["Content-Type"]
		if h.header.Get("Content-Encoding") == "" && !haveType && !hasTE && len(p) > 0 {
			h.extra.contentType = http.DetectContentType(p)
		}
	} else {
		for _, k := range suppressedHeaders(code) {
			h.del(k)
		}
	}
	if _, ok := h.header["Date"]; !ok {
		h.extra.date = time.Now().UTC().AppendFormat(w.dateBuf[:0], http.TimeFormat)
	}
	if hasCL && hasTE && te != "identity" {
		w.c.srv.logf("h1serve: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		h.del("Content-Length")
		hasCL = false
	}
	cw.decideFraming(h, isHEAD, hasCL, te)
	if !w.req.ProtoAtLeast(1, 0) {
		return
	}
	if w.closeAfterReply && !hasToken(headerGet(cw.header, "Connection"), "close") && !isProtocolSwitchResponse(code, h.header) {
		h.del("Connection")
		if w.req.ProtoAtLeast(1, 1) {
			h.extra.connection = "close"
		}
	}

	bw := w.c.bw
	writeStatusLine(bw, w.req.ProtoAtLeast(1, 1), code)
	cw.header.WriteSubset(bw, h.exclude)
	h.extra.write(bw)
	bw.WriteString("\r\n")
}

// declareTrailers leaves the http.TrailerPrefix keys out of the head and declares the
// trailers the Trailer header names; it reports whether there are any.
func (cw *chunkWriter) declareTrailers(h *head) bool {
	trailers := false
	for k := range cw.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			h.leaveOut(k)
			trailers = true
		}
	}
	for _, v := range cw.header["Trailer"] {
		trailers = true
		foreachHeaderElement(v, cw.res.declareTrailer)
	}
	return trailers
}

// decideReuse decides whether the connection closes after this response: HTTP/1.0
// keep-alive, Connection: close on either side, a 100-continue body left unread.
func (w *response) decideReuse(h *head, isHEAD, hasCL bool) {
	if w.wants10KeepAlive {
		if headerGet(h.header, "Content-Length") != "" && headerGet(h.header, "Connection") == "keep-alive" {
			w.closeAfterReply = false
		}
	}
	if w.wants10KeepAlive && (isHEAD || hasCL || !bodyAllowedForStatus(w.status)) {
		if _, set := h.header["Connection"]; !set {
			h.extra.connection = "keep-alive"
		}
	} else if !w.req.ProtoAtLeast(1, 1) || w.wantsClose {
		w.closeAfterReply = true
	}
	if headerGet(h.header, "Connection") == "close" {
		w.closeAfterReply = true
	}
	// A client that waits for 100 Continue and whose body we did not read to its end
	// cannot keep the connection.
	if b, ok := w.req.Body.(*reqBody); ok && b.expectContinue && !b.sawEOF.Load() {
		w.closeAfterReply = true
	}
}

// discardUnreadBody reads what is left of the request body (up to 256 KiB) before the
// answer, so that a client that sends a whole request before reading cannot deadlock; a
// longer rest closes the connection.
func (w *response) discardUnreadBody(h *head) {
	if w.req.ContentLength == 0 || w.closeAfterReply || w.fullDuplex {
		return
	}
	var discard, tooBig bool
	switch bdy := w.req.Body.(type) {
	case *reqBody:
		if bdy.expectContinue {
			break // read to its end, see decideReuse
		}
		bdy.mu.Lock()
		switch {
		case bdy.closed:
			if !bdy.sawEOF.Load() {
				w.closeAfterReply = true
			}
		case bdy.remaining >= maxPostHandlerReadBytes:
			tooBig = true
		default:
			discard = true
		}
		bdy.mu.Unlock()
	default:
		discard = true
	}
	if discard {
		_, err := io.CopyN(io.Discard, w.body, maxPostHandlerReadBytes+1)
		switch err {
		case nil:
			tooBig = true
		case http.ErrBodyReadAfterClose:
		case io.EOF:
			if err := w.body.Close(); err != nil {
				w.closeAfterReply = true
			}
		default:
			w.closeAfterReply = true
		}
	}
	if tooBig {
		w.requestTooLarge()
		h.del("Connection")
		h.extra.connection = "close"
	}
}

// decideFraming picks how the body is delimited: Content-Length, chunked (HTTP/1.1), or
// the connection's close (HTTP/1.0 without a length, Transfer-Encoding: identity).
func (cw *chunkWriter) decideFraming(h *head, isHEAD, hasCL bool, te string) {
	w := cw.res
	code := w.status
	switch {
	case isHEAD || !bodyAllowedForStatus(code) || code == http.StatusNoContent:
		h.del("Transfer-Encoding")
	case hasCL:
		h.del("Transfer-Encoding")
	case w.req.ProtoAtLeast(1, 1):
		if te == "identity" {
			cw.chunking = false
			w.closeAfterReply = true
			h.del("Transfer-Encoding")
		} else {
			cw.chunking = true
			h.extra.transferEncoding = "chunked"
			if te == "chunked" {
				h.del("Transfer-Encoding")
			}
		}
	default:
		// HTTP/1.0 without a length: the body ends when the connection closes
		w.closeAfterReply = true
		h.del("Transfer-Encoding")
	}
	if cw.chunking {
		h.del("Content-Length")
	}
}

func suppressedHeaders(status int) []string {
	switch {
	case status == 304:
		return []string{"Content-Type", "Content-Length", "Transfer-Encoding"}
	case !bodyAllowedForStatus(status):
		return []string{"Content-Length", "Transfer-Encoding"}
	}
	return nil
}

func isProtocolSwitchResponse(code int, h http.Header) bool {
	return code == http.StatusSwitchingProtocols && h.Get("Upgrade") != "" &&
		httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

func foreachHeaderElement(v string, fn func(string)) {
	v = textprotoTrim(v)
	if v == "" {
		return
	}
	if !strings.Contains(v, ",") {
		fn(v)
		return
	}
	for f := range strings.SplitSeq(v, ",") {
		if f = textprotoTrim(f); f != "" {
			fn(f)
		}
	}
}

// textprotoTrim trims the ASCII white space net/textproto trims.
func textprotoTrim(s string) string {
	isSpace := func(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// extraHeader holds the headers the writer adds, written after the handler's in
// net/http's order.
type extraHeader struct {
	date             []byte
	contentLength    []byte
	contentType      string
	connection       string
	transferEncoding string
}

func (h *extraHeader) write(bw *bufio.Writer) {
	if h.date != nil {
		bw.WriteString("Date: ")
		bw.Write(h.date)
		bw.WriteString("\r\n")
	}
	if h.contentLength != nil {
		bw.WriteString("Content-Length: ")
		bw.Write(h.contentLength)
		bw.WriteString("\r\n")
	}
	for _, kv := range [...][2]string{{"Content-Type", h.contentType}, {"Connection", h.connection}, {"Transfer-Encoding", h.transferEncoding}} {
		if kv[1] != "" {
			bw.WriteString(kv[0])
			bw.WriteString(": ")
			bw.WriteString(kv[1])
			bw.WriteString("\r\n")
		}
	}
}
