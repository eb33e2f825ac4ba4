package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/internal/swap"
)

// Backend is one upstream the proxy serves through: its address, its own keep-alive pool
// and ReverseProxy, and how many requests are in flight to it. The proxy holds the current
// one behind an atomic pointer; Switch replaces it and hands back the previous one, whose
// Wait returns once the requests it still carries are done.
type Backend struct {
	proxy     *Proxy
	target    string // the upstream as logged
	rp        *httputil.ReverseProxy
	transport *inlineTransport // the inline fast path over the pooled http.Transport

	// gen counts the requests in flight; Switch retires it (package swap).
	gen *swap.Gen
}

// maxAcquire bounds how often a request looks for a backend that Switch has not retired
// meanwhile. Only a Switch between its load and its count makes it look again, so more
// than a couple of rounds take Switch calls back to back.
const maxAcquire = 16

// errSwitching is answered (502) to a request that lost maxAcquire races with Switch.
var errSwitching = errors.New("the upstream was switched repeatedly while this request was looking for it")

// newBackend builds the pool and ReverseProxy for upstream u with p's options.
func (p *Proxy) newBackend(u *url.URL) (*Backend, error) {
	opts := p.opts
	opts.Upstream = u
	target, transport, err := newTransport(opts)
	if err != nil {
		return nil, err
	}
	b := &Backend{proxy: p, target: u.String(), transport: newInlineTransport(opts, transport, &p.conns), gen: swap.New(nil)}
	// After the inline path took its dialer: it writes only request heads, and its
	// cancel poisons deadlines that a per-write deadline would undo.
	transport.DialContext = withSendTimeout(transport.DialContext, opts.UpstreamSendTimeout)
	var rt http.RoundTripper = b.transport
	if opts.ReadTimeout > 0 || opts.UpgradeIdleTimeout > 0 {
		rt = &progressTransport{next: b.transport, readTimeout: opts.ReadTimeout, upgradeIdle: opts.UpgradeIdleTimeout}
	}
	b.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite(target),
		Transport: rt,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if p.answerProgressError(w) {
				return
			}
			p.answerUpstreamError(b.target, w, r, err)
		},
		ErrorLog:   p.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		BufferPool: p.buffers,
	}
	// passResponse watches the body for a cut-short end (access log, flush); endGRPCStreams,
	// outside it, turns such an end of a gRPC response into trailers a gRPC client reads.
	b.rp.ModifyResponse = func(res *http.Response) error {
		wsAppSide(res)
		if err := p.passResponse(b.target, res); err != nil {
			return err
		}
		return p.endGRPCStreams(res)
	}
	return b, nil
}

// serve forwards r through the current backend, counted in its in-flight requests.
func (p *Proxy) serve(rp *reply, w http.ResponseWriter, r *http.Request) {
	b := p.acquire()
	if b == nil {
		p.answerError(w, r, errSwitching)
		return
	}
	defer b.release()
	pw, _ := w.(*progressWriter)
	if o := p.opts.Overload; o != nil && !isUpgrade(r) {
		if !o.acquireInto(&rp.slot, r.RemoteAddr, pw, r.Context().Done()) {
			if err := r.Context().Err(); err != nil {
				p.answerError(w, r, err) // the client went away, or its deadline passed
			} else {
				p.answerError(w, r, errOverloaded)
			}
			return
		}
		defer rp.slot.release()
	}
	rp.guard.ResponseWriter = w
	g := &rp.guard
	rp.w = g // the cut-short watch flushes through the guard's lock
	defer p.recoverRequest(b.target, g, r)
	if isWebSocketUpgrade(r) {
		ws, wr, end := p.startWebSocket(b, g, r)
		defer end()
		b.rp.ServeHTTP(ws, wr)
		return
	}
	b.rp.ServeHTTP(g, r)
}

// acquire counts a request on the current backend and returns it; nil only when Switch
// won maxAcquire races in a row.
func (p *Proxy) acquire() *Backend {
	for range maxAcquire {
		// A b that Switch retired after the load refuses: its Wait may already have
		// returned, so the request must not go there. The backend that replaced it is
		// stored by now.
		if b := p.cur.Load(); b.gen.Acquire() {
			return b
		}
	}
	return nil
}

func (b *Backend) release() { b.gen.Release() }

// Switch sends every request that starts from now on to u, with a keep-alive pool of its
// own, and returns the backend that served until now: Wait on it for the requests still in
// flight there, then Close it. Requests already in flight are not touched. An error
// (an upstream URL the proxy cannot use) leaves the current backend in place.
func (p *Proxy) Switch(u *url.URL) (old *Backend, err error) {
	if u == nil {
		return nil, errors.New("proxy: switch to no upstream")
	}
	b, err := p.newBackend(u)
	if err != nil {
		return nil, err
	}
	old = p.cur.Swap(b)
	old.gen.Retire()
	return old, nil
}

// Upstream is this backend's upstream as shown in logs.
func (b *Backend) Upstream() string { return b.target }

// Inflight is how many requests are in flight to this backend now.
func (b *Backend) Inflight() int64 { return b.gen.Inflight() }

// Wait returns nil once a backend that Switch replaced has no request in flight, or an
// error saying how many are left when ctx ends first. It wakes when the last one finishes;
// it does not poll. On the current backend it waits for ctx.
func (b *Backend) Wait(ctx context.Context) error {
	if err := b.gen.Wait(ctx); err != nil {
		return fmt.Errorf("%d requests still in flight to %s: %w", b.Inflight(), b.target, err)
	}
	return nil
}

// Close closes the backend's idle keep-alive connections. Call it after Wait; requests
// still in flight (Wait gave up) keep their connections until they finish, and those on
// the inline path close them then instead of keeping them.
func (b *Backend) Close() { b.transport.close() }

// closeIdle closes the backend's idle keep-alive connections; it keeps pooling afterwards.
func (b *Backend) closeIdle() { b.transport.CloseIdleConnections() }
