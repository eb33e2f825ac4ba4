package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/drainproxy/drainproxy/internal/clientconn"
)

// Half-closed clients. net/http ends an HTTP/1 request's context on any read error from
// the client connection, a clean end of its sending included: a client that sends its
// request and then shuts down its write side (shutdown(SHUT_WR), nc -N, some HTTP/1.0
// clients and health checkers; for TLS, a close_notify after the request) looks to it
// like a client that went away. RFC 9112 (9.6) allows that half-close, and such a client
// waits for its answer.
//
// So an HTTP/1 request's way to the upstream does not end with the request's context.
// It ends when the handler returns, or when clientStopped, called as net/http ends the
// request's context, finds the client gone (and from then on every halfClosePoll while
// the request lasts, if the first look found it there):
//
//   - the connection was closed on our side (the drain's deadline, a failed write), or
//     the kernel says it is reset or otherwise no longer open (TCP state other than
//     ESTABLISHED or CLOSE_WAIT): gone;
//   - TLS: a close_notify alone leaves TCP open (ESTABLISHED): a half-close; a FIN with it
//     (CLOSE_WAIT) is what a client that closes its connection sends: gone;
//   - plain TCP: a FIN (CLOSE_WAIT) is a half-close when it came right after the
//     request's last byte (within halfCloseWindow, from TCP_INFO), as a half-closing
//     client sends it; a FIN that came later is a client that waited, gave up and closed:
//     gone. A client that closes within halfCloseWindow of sending its request is taken
//     for a half-closing one: its request is answered, and the answer meets a reset;
//   - a FIN (plain or TLS) that came before the end of the request's body: no verdict,
//     whatever its timing; the body's read fails short and the client is answered 400,
//     as nginx answers a client that closed mid-body (a reset mid-body is gone: 499);
//   - the kernel cannot tell (not Linux, a unix socket, no connection in the context):
//     gone, as before.
//
// HTTP/2 (a stream's END_STREAM is no half-close of the connection), upgrade requests and
// gRPC keep the request's context as it is.

// halfCloseWindow is how soon after a request's last byte a plain-TCP client's FIN must
// arrive to be taken for a half-close. A half-closing client sends it at once (the two
// segments leave together, microseconds apart); a client that gives up waits for its own
// timeout first. TCP_INFO counts in jiffies (1 to 10 ms).
const halfCloseWindow = 20 * time.Millisecond

// halfClosePoll is how often a half-closed client's connection is looked at again while
// its request is under way: a reset after the half-close ends the request this much later.
const halfClosePoll = 100 * time.Millisecond

// errClientGone is the cause of a request's context ended by clientStopped or look.
var errClientGone = errors.New("proxy: the client closed or reset its connection")

// clientWatch follows the client connection of one HTTP/1 request; see above.
type clientWatch struct {
	conn   net.Conn
	tls    bool
	cancel context.CancelCauseFunc
	stop   func() bool // unregisters clientStopped from the request's context
	body   *sentBody   // the request's body; nil without one

	mu    sync.Mutex
	ended bool        // the handler has returned
	timer *time.Timer // the next look, while the client is half-closed
}

// Deadline, Done and Err make a reply the parent of the context its request goes upstream
// with: the request's values (reply.Value), and none of its cancellation. Done's nil
// channel tells context.WithCancel that this parent never ends, so a child registers
// nowhere and starts no goroutine.
func (rp *reply) Deadline() (time.Time, bool) { return time.Time{}, false }
func (rp *reply) Done() <-chan struct{}       { return nil }
func (rp *reply) Err() error                  { return nil }

// Value carries the reply itself (replyKey) and the request's values.
func (rp *reply) Value(key any) any {
	if key == (replyKey{}) {
		return rp
	}
	return rp.parent.Value(key)
}

// detach returns the context r goes upstream with, carrying rp: for an HTTP/1 request on
// a connection the kernel can tell about (clientconn.ConnContext), one that ends when
// release is called or clientStopped finds the client gone; for any other, r's own.
func (rp *reply) detach(r *http.Request) context.Context {
	parent := r.Context()
	rp.parent = parent
	var c net.Conn
	// gRPC (gRPC-Web over HTTP/1 included) keeps its context: ServeHTTP bounded it by the
	// call's grpc-timeout.
	if r.ProtoMajor == 1 && r.Header["Upgrade"] == nil && !IsGRPC(r) {
		c = clientconn.Of(parent)
	}
	if c == nil {
		return context.WithValue(parent, replyKey{}, rp)
	}
	_, isTLS := c.(*tls.Conn)
	ctx, cancel := context.WithCancelCause(rp)
	rp.watch = clientWatch{conn: c, tls: isTLS, cancel: cancel}
	if rp.sent.ReadCloser != nil {
		rp.watch.body = &rp.sent
	}
	rp.watch.stop = context.AfterFunc(parent, rp.watch.clientStopped)
	return ctx
}

// release ends what detach started; the handler is returning.
func (rp *reply) release() {
	w := &rp.watch
	if w.cancel == nil {
		return
	}
	w.stop()
	w.mu.Lock()
	w.ended = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.mu.Unlock()
	w.cancel(context.Canceled)
}

// clientStopped runs when net/http ends the request's context.
func (w *clientWatch) clientStopped() {
	if !w.stillThere(true) {
		w.cancel(errClientGone)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.timer = time.AfterFunc(halfClosePoll, w.look)
	}
}

// look is the periodic check of a half-closed client.
func (w *clientWatch) look() {
	if !w.stillThere(false) {
		w.cancel(errClientGone)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.timer.Reset(halfClosePoll)
	}
}

// stillThere reports whether the client may still read an answer; first is the look as
// net/http ended the request's context, when a plain-TCP FIN is judged by its timing.
func (w *clientWatch) stillThere(first bool) bool {
	i := clientconn.Read(w.conn)
	if !i.OK {
		return false // closed on our side, or the kernel cannot tell: as before
	}
	switch i.State {
	case clientconn.StateEstablished:
		return true
	case clientconn.StateCloseWait:
		if w.body != nil && w.body.unfinished() {
			// The FIN came before the end of the request's body: a half-close mid-body
			// or a close, which its timing cannot tell apart. The body's read fails
			// short, and that failure decides: a 400, for whoever still reads (as
			// nginx answers a client that closed mid-body).
			return true
		}
		if w.tls {
			return false
		}
		// The FIN is the last segment the client sent: it is the latest acknowledgement
		// we received. A later look keeps the first's verdict (TCP keepalive probes'
		// acknowledgements move the time on).
		return !first || i.LastDataRecv-i.LastAckRecv <= halfCloseWindow
	}
	return false
}
