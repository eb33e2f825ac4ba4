package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"syscall"
)

// reply is what the way back of one proxied request needs: the writer to the client, and
// the upstream's body as passResponse watches it. ServeHTTP puts it on the request's
// context, where passResponse finds it: the ReverseProxy hands ModifyResponse the
// response, not the writer. Per request, that costs this (the body's wrapper included) and
// the request's shallow copy; on HTTP/1, the reply is also the parent of the request's
// context upstream (halfclose.go), and the watch of the client connection costs seven more
// (BenchmarkProxyHotPath: 126 to 133 allocations, 10.97 to 11.64 KB, on 2026-12-07).
type reply struct {
	parent context.Context // the request's context as the server made it
	w      http.ResponseWriter
	body   watchedBody
	sent   sentBody    // the request body, watched for an end before its length
	watch  clientWatch // HTTP/1: the client connection (halfclose.go)
}

type replyKey struct{}

// passResponse is the ReverseProxy's ModifyResponse for the backend at target: the app's
// headers go to the client as they are, and the body is watched for a cut.
func (p *Proxy) passResponse(target string, res *http.Response) error {
	rp, _ := res.Request.Context().Value(replyKey{}).(*reply)
	if rp == nil || res.StatusCode < http.StatusOK {
		return nil // a 101's body is the upgraded connection: not ours to wrap
	}
	if _, ok := res.Header["Content-Type"]; !ok {
		// Without one, net/http would sniff a type from the first bytes and send it:
		// text/html for an untyped user file that looks like a page. A nil value stops
		// the sniffing and sends no Content-Type at all (HTTP/1 and HTTP/2 alike).
		rp.w.Header()["Content-Type"] = nil
	}
	if res.Body != nil && res.Body != http.NoBody {
		rp.body = watchedBody{ReadCloser: res.Body, proxy: p, w: rp.w, target: target,
			req: res.Request, status: res.StatusCode}
		res.Body = &rp.body
	}
	return nil
}

// watchedBody is an upstream response body on its way to the client. When the upstream cuts
// it short (a reset, a close before the declared length, a broken chunk, a stall that a
// read deadline ends), it records the cause for the access log and metrics, logs it, and
// flushes to the client what did arrive before the ReverseProxy aborts the response. The
// abort drops what the server still buffers, so without the flush a client could get
// nothing of bytes the access log counts as sent (or no response at all); with it, the
// client gets them all and then sees the response break off (the connection closes, or an
// HTTP/2 stream is reset), never an end that looks complete.
type watchedBody struct {
	io.ReadCloser
	proxy  *Proxy
	w      http.ResponseWriter
	target string
	req    *http.Request // the request to the upstream
	status int           // sent to the client already
	n      int64         // bytes read
	err    error         // the read error, held back until the bytes read with it are written
	done   bool          // cut has run
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		b.cut()
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == nil || err == io.EOF {
		return n, err
	}
	b.err = err
	if n > 0 {
		return n, nil // the ReverseProxy writes these first; the next Read reports the cut
	}
	b.cut()
	return 0, err
}

// cut handles the end of the body by b.err, once every byte read before it was written.
func (b *watchedBody) cut() {
	if b.done {
		return
	}
	b.done = true
	reason, _ := classify(b.req, b.err)
	if rec := recorderOf(b.w); rec != nil {
		rec.RecordUpstreamError(reason, b.status, b.err)
	}
	if reason == ReasonClientCanceled {
		b.proxy.log.Debug("client went away during the response",
			"upstream", b.target, "method", b.req.Method, "path", b.req.URL.Path)
		return
	}
	b.proxy.log.Error("upstream response cut short", "upstream", b.target, "reason", reason,
		"error", b.err.Error(), "status", b.status, "body_bytes", b.n,
		"method", b.req.Method, "path", b.req.URL.Path)
	http.NewResponseController(b.w).Flush()
}

// http10Writer is the writer to an HTTP/1.0 client: it drops informational (1xx)
// responses, which RFC 9110 (15.2) forbids sending to one (it would take the first for the
// answer). The ReverseProxy forwards them from either transport as they arrive.
type http10Writer struct{ http.ResponseWriter }

func (w http10Writer) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController, innermost and recorderOf reach the writer inside.
func (w http10Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sentBody is the request body on its way upstream. It notes a read that failed (the
// client ended its request before the length it declared): the round trip's error is then
// the client's doing, not the upstream's.
type sentBody struct {
	io.ReadCloser
	failed atomic.Bool // a read failed: the body is broken (short, malformed)
	reset  atomic.Bool // a read failed on a reset connection: the client is gone
	ended  atomic.Bool // a read returned io.EOF: the whole body came
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		b.ended.Store(true)
	case errors.Is(err, http.ErrBodyReadAfterClose):
		// A read after the round trip closed the body is ours, not the client's.
	case errors.Is(err, syscall.ECONNRESET):
		b.reset.Store(true)
	default:
		// Any other failure is the client's body: a short body, a malformed chunk, bare
		// LF, an over-long chunk extension.
		b.failed.Store(true)
	}
	return n, err
}

// unfinished reports whether the body has not come in full yet (nor failed).
func (b *sentBody) unfinished() bool {
	return b.ReadCloser != nil && !b.ended.Load() && !b.failed.Load() && !b.reset.Load()
}

// requestBodyFault tells what reading r's body from the client found: "" (nothing wrong),
// ReasonBadRequest (the body is broken) or ReasonClientCanceled (the client reset its
// connection).
func requestBodyFault(r *http.Request) string {
	rp, _ := r.Context().Value(replyKey{}).(*reply)
	switch {
	case rp == nil:
	case rp.sent.reset.Load():
		return ReasonClientCanceled
	case rp.sent.failed.Load():
		return ReasonBadRequest
	}
	return ""
}
