// Package proxy is drainproxy's request path: an httputil.ReverseProxy configured for one
// upstream (http, https or a unix socket), with a keep-alive pool sized for concurrency,
// forwarded-header trust, a request body limit and error answers that say what went wrong.
//
// The package configures the standard ReverseProxy rather than wrapping it: streaming,
// trailers, hop-by-hop stripping and protocol upgrades (WebSocket) are the standard
// library's. What this package adds is policy.
package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Options configures New. Every zero value is usable except Upstream.
type Options struct {
	// Upstream is where requests go: http://host:port, https://host:port,
	// unix:///path/to.sock, or h2c://host:port and unix+h2c:///path/to.sock for HTTP/2 in
	// clear text (prior knowledge; gRPC). An https upstream is offered h2 by ALPN. Its
	// path, if any, is prefixed to every request path.
	Upstream *url.URL

	// HostHeader is "client" (zero value: pass the Host the client sent, which most apps
	// behind a sidecar expect) or "upstream" (use the upstream URL's host).
	HostHeader string

	// TrustedProxies lists the client addresses whose Forwarded and X-Forwarded-* headers
	// are passed on (our own address is appended). From anyone else those headers are
	// replaced, so a client cannot forge its address. Empty: trust nobody.
	TrustedProxies []netip.Prefix

	// DialTimeout bounds connecting to the upstream (zero: 5s).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the upstream's response headers after the
	// request is sent; exceeding it answers 504 (zero: no bound).
	ResponseHeaderTimeout time.Duration
	// IdleConns is how many idle keep-alive connections to the upstream are kept (zero:
	// 1024). Past it, connections freed by a burst of concurrent requests are closed and
	// opened again by the next burst; Go's default of 2 per host does that constantly.
	IdleConns int
	// IdleConnTimeout closes pooled upstream connections unused this long (zero: 90s).
	IdleConnTimeout time.Duration
	// MaxResponseHeaderBytes bounds an upstream response head (status line and header
	// fields, 1xx heads included); a longer one answers 502 (zero: DefaultMaxResponseHeaderBytes).
	MaxResponseHeaderBytes int64

	// DisableKeepAlives gives every exchange with the upstream a connection of its own,
	// closed after it (zero value: connections are pooled and reused). A stray response
	// from the upstream then never reaches another exchange, at the cost of a connect per
	// request (docs/requests.md has the measured cost).
	DisableKeepAlives bool
	// StrayQuarantine is how long an upstream that sent a stray response (stray.go) has
	// each of its connections closed after one exchange (zero: DefaultStrayQuarantine).
	StrayQuarantine time.Duration
	// ProtocolErrors counts the stray responses seen, by case (nil: the proxy counts
	// them in a value of its own). Share one to keep counting across reloads.
	ProtocolErrors *ProtocolErrors

	// MaxRequestBodyBytes answers 413 to a request body larger than this (zero: no limit).
	MaxRequestBodyBytes int64

	// Progress timeouts (progress.go): each bounds the time without a byte moving, never a
	// whole transfer; zero turns one off. SendTimeout: between two writes to the client.
	// ClientBodyTimeout: between two reads of the request body (408 before an answer).
	// ReadTimeout: between two reads of the upstream's response body, once its headers
	// arrived. UpstreamSendTimeout: between two writes of a request to the upstream (504).
	// UpgradeIdleTimeout: an upgraded connection (WebSocket) with nothing moving either way.
	SendTimeout         time.Duration
	ClientBodyTimeout   time.Duration
	ReadTimeout         time.Duration
	UpstreamSendTimeout time.Duration
	UpgradeIdleTimeout  time.Duration
	// WindowTimeout bounds the first write of an HTTP/2 response when shorter than
	// SendTimeout: a client that gives a stream no send window (SETTINGS_INITIAL_WINDOW_SIZE
	// 0) has it reset after this, instead of holding an upstream request (zero: off).
	WindowTimeout time.Duration

	// Overload, when set, caps the requests in flight to the upstream (see Overload); it
	// may be shared by the proxies a reload builds one after another. Nil: no cap.
	Overload *Overload

	// Logger receives one line per failed upstream exchange (zero: discard).
	Logger hclog.Logger
}

// ErrorRecorder may be implemented by the http.ResponseWriter handed to ServeHTTP, or by one
// it wraps (an access-log or metrics wrapper), to learn why the proxy answered with an error
// instead of the upstream's response, or why the upstream's response broke off after its
// status was sent. reason is one of the Reason* constants; status is what the client is
// answered (StatusClientClosedRequest when nobody is left to answer; the upstream's status
// when its response broke off).
type ErrorRecorder interface {
	RecordUpstreamError(reason string, status int, err error)
}

// IDRecorder may be implemented by the http.ResponseWriter handed to ServeHTTP, or by one
// it wraps (the drain's in-flight list), to learn the request id the proxy settled on.
type IDRecorder interface {
	RecordRequestID(id string)
}

// idRecorderOf finds the IDRecorder among w and the writers it wraps; nil if none is.
func idRecorderOf(w http.ResponseWriter) IDRecorder {
	for {
		if rec, ok := w.(IDRecorder); ok {
			return rec
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

// recorderOf finds the ErrorRecorder among w and the writers it wraps; nil if none is.
func recorderOf(w http.ResponseWriter) ErrorRecorder {
	for {
		if rec, ok := w.(ErrorRecorder); ok {
			return rec
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

// Reasons an exchange with the upstream failed, as passed to ErrorRecorder and used as the
// label of upstream error metrics.
const (
	ReasonRefused        = "refused"         // nothing listening at the upstream address: 502
	ReasonReset          = "reset"           // the upstream closed or reset the connection: 502
	ReasonTimeout        = "timeout"         // dial or response-header timeout: 504
	ReasonBodyTooLarge   = "body_too_large"  // the request body exceeded the limit: 413
	ReasonClientCanceled = "client_canceled" // the client went away first: nothing to answer
	ReasonBadRequest     = "bad_request"     // a request target not to forward (refusedTarget): 400 or 405; a request body cut short: 400
	ReasonClientDeadline = "client_deadline" // the deadline the client set (grpc-timeout) passed: 504, gRPC DEADLINE_EXCEEDED
	ReasonOverloaded     = "overloaded"      // no slot under the cap on requests in flight (Overload) in time: 503
	ReasonOther          = "other"           // anything else (TLS, DNS, protocol): 502
)

// StatusClientClosedRequest is recorded (never sent) when the client went away before the
// upstream answered, after nginx's 499.
const StatusClientClosedRequest = 499

// Proxy is an http.Handler that forwards every request to the upstream.
type Proxy struct {
	cur     atomic.Pointer[Backend] // where requests go now; Switch replaces it
	buffers httputil.BufferPool     // shared by every backend
	conns   connBuffers             // upstream connection buffers, shared by every backend
	// websockets holds the WebSockets open through the proxy (*wsSession), for GoAway.
	websockets sync.Map
	opts       Options
	log        hclog.Logger

	basePath bool // the upstream URL has a path that prefixes every request's

	overloadLogged atomic.Int64 // UnixNano of the last "overloaded" warning
	overloadQuiet  atomic.Int64 // rejections since, not logged
}

// New builds the proxy. It does not contact the upstream.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == nil {
		return nil, errors.New("proxy: no upstream URL")
	}
	switch opts.HostHeader {
	case "", "client", "upstream":
	default:
		return nil, fmt.Errorf("proxy: host header policy %q: want client or upstream", opts.HostHeader)
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.IdleConns <= 0 {
		opts.IdleConns = 1024
	}
	if opts.IdleConnTimeout <= 0 {
		opts.IdleConnTimeout = 90 * time.Second
	}
	if opts.MaxResponseHeaderBytes <= 0 {
		opts.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	if opts.StrayQuarantine <= 0 {
		opts.StrayQuarantine = DefaultStrayQuarantine
	}
	if opts.ProtocolErrors == nil {
		opts.ProtocolErrors = &ProtocolErrors{}
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	opts.Logger = log

	p := &Proxy{opts: opts, log: log, buffers: newBufferPool()}
	switch opts.Upstream.Scheme {
	case "unix", SchemeUnixH2C: // the path is the socket's
	default:
		p.basePath = strings.Trim(opts.Upstream.Path, "/") != ""
	}
	b, err := p.newBackend(opts.Upstream)
	if err != nil {
		return nil, err
	}
	p.cur.Store(b)
	return p, nil
}

// RequestIDHeader carries the request id to the upstream (and to the access log).
const RequestIDHeader = "X-Request-Id"

// ServeHTTP forwards r to the upstream. r.Header carries the request id from here on: the
// client's when it is a trusted proxy, a new one otherwise.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Context().Value(requestIDAssigned{}) == nil {
		p.setRequestID(r)
	}
	if rec := idRecorderOf(w); rec != nil {
		rec.RecordRequestID(r.Header.Get(RequestIDHeader))
	}
	dropH2CUpgrade(r.Header)
	if status, why := refusedTarget(r); status != 0 {
		p.refuse(w, r, status, why)
		return
	}
	if p.basePath && climbsAboveRoot(r.URL.Path) {
		p.refuse(w, r, http.StatusBadRequest, "the request path climbs above / with .. segments, out of the upstream's base path")
		return
	}
	if IsGRPC(r) {
		var cancel context.CancelFunc
		r, cancel = withGRPCDeadline(r)
		defer cancel()
	}
	if limit := p.opts.MaxRequestBodyBytes; limit > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > limit {
			// Known up front: answer without bothering the upstream, or reading the body.
			// HTTP/1 closes the connection (the body may still come); on HTTP/2 the header
			// would make the server end every stream of the connection.
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			p.answerError(w, r, &http.MaxBytesError{Limit: limit})
			return
		}
		// The server's own ResponseWriter, not a wrapper's: over the limit, MaxBytesReader
		// tells it to close the connection the careful way (FIN, then a short wait), so
		// that a client still sending its body reads the 413 instead of a reset.
		r.Body = http.MaxBytesReader(innermost(w), r.Body, limit)
	}
	if !r.ProtoAtLeast(1, 1) {
		w = http10Writer{w}
	}
	// What the response's way back needs (passResponse) rides on the request's context:
	// the ReverseProxy hands ModifyResponse the response, not the writer.
	rp := &reply{w: w}
	if r.Body != nil && r.Body != http.NoBody {
		rp.sent.ReadCloser = r.Body
		r.Body = &rp.sent
	}
	ctx := rp.detach(r)
	defer rp.release()
	p.serve(w, r.WithContext(ctx))
}

// CloseIdleConnections closes pooled upstream connections; call it once serving is over.
func (p *Proxy) CloseIdleConnections() { p.cur.Load().closeIdle() }

// Upstream is the upstream address as shown in logs.
func (p *Proxy) Upstream() string { return p.cur.Load().target }

// ProtocolErrors is where the proxy counts stray upstream responses (Options.ProtocolErrors).
func (p *Proxy) ProtocolErrors() *ProtocolErrors { return p.opts.ProtocolErrors }

// DefaultMaxResponseHeaderBytes is Options.MaxResponseHeaderBytes's default, 64 KiB: more
// than Envoy's 60 KiB and eight times nginx's 8 KiB proxy_buffer_size, so that large
// cookie and security headers pass, yet a thousand responses in flight hold at most
// 64 MiB of heads instead of the http.Transport's 10 MB each.
const DefaultMaxResponseHeaderBytes = 64 << 10

// newTransport builds the upstream transport and the URL requests are rewritten to. For a
// unix socket the URL becomes http://<socket name> and every dial goes to the socket.
func newTransport(opts Options) (*url.URL, *http.Transport, error) {
	u := opts.Upstream
	dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 nil, // a sidecar talks to its app directly, whatever HTTP_PROXY says
		DialContext:           dialer.DialContext,
		MaxIdleConns:          opts.IdleConns,
		MaxIdleConnsPerHost:   opts.IdleConns,
		IdleConnTimeout:       opts.IdleConnTimeout,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// Pass bodies through as the app encoded them; the client negotiated that.
		DisableCompression: true,
		DisableKeepAlives:  opts.DisableKeepAlives,
	}
	t.MaxResponseHeaderBytes = opts.MaxResponseHeaderBytes // the inline path's bound too
	target := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	switch u.Scheme {
	case "http":
		t.DialContext = guardDial(t.DialContext)
	case "https":
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		t.ForceAttemptHTTP2 = true
	case "unix":
		socket := u.Path
		if socket == "" {
			return nil, nil, fmt.Errorf("proxy: upstream %s: no socket path; write unix:///path/to.sock", u)
		}
		t.DialContext = guardDial(func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		})
		// The Host the app sees when the policy is "upstream"; the path is the socket's.
		target = &url.URL{Scheme: "http", Host: "localhost"}
	case SchemeH2C, SchemeUnixH2C:
		h2cTarget, err := useH2C(u, t, dialer)
		if err != nil {
			return nil, nil, err
		}
		target = h2cTarget
	default:
		return nil, nil, fmt.Errorf("proxy: upstream %s: scheme %q not supported; use http, https, unix, h2c or unix+h2c", u, u.Scheme)
	}
	return target, t, nil
}

func (p *Proxy) rewrite(target *url.URL) func(*httputil.ProxyRequest) {
	keepClientHost := p.opts.HostHeader != "upstream"
	return func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		if keepClientHost {
			r.Out.Host = r.In.Host
		}
		if r.In.URL.Path == "*" {
			// OPTIONS * (refusedTarget lets no other method through with *) asks about
			// the server as a whole: it goes on as it came, not as a path under the
			// upstream's ("/%2A").
			r.Out.URL.Path, r.Out.URL.RawPath = "*", ""
		}
		// The ReverseProxy has already removed Forwarded and X-Forwarded-{For,Host,Proto}
		// from r.Out: from an untrusted peer they are replaced by what SetXForwarded
		// writes, and every other claim about the original client goes too.
		trusted := p.trusted(r.In.RemoteAddr)
		if trusted {
			copyEndToEnd(r.Out.Header, r.In.Header, "Forwarded", "X-Forwarded-For")
		} else {
			dropForwardingClaims(r.Out.Header)
		}
		r.SetXForwarded() // appends the peer to a kept X-Forwarded-For
		if trusted {
			// The proxy in front saw the original host and scheme; we did not.
			copyEndToEnd(r.Out.Header, r.In.Header, "X-Forwarded-Host", "X-Forwarded-Proto")
		}
		// ServeHTTP chose the id; the ReverseProxy has stripped it from r.Out if the
		// client named it in Connection, and the upstream must get it all the same.
		if _, ok := r.Out.Header[RequestIDHeader]; !ok {
			r.Out.Header[RequestIDHeader] = r.In.Header[RequestIDHeader]
		}
	}
}

// innermost unwraps ResponseWriter wrappers (as http.ResponseController does) down to the
// server's own.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// requestIDAssigned marks a request that WithRequestID gave its id.
type requestIDAssigned struct{}

// WithRequestID gives r its request id as ServeHTTP would, for a handler in front of the
// proxy that may answer by itself (the supervisor's 503 while the app is down), so that
// its access log line has the id too; ServeHTTP keeps it.
func (p *Proxy) WithRequestID(r *http.Request) *http.Request {
	p.setRequestID(r)
	return r.WithContext(context.WithValue(r.Context(), requestIDAssigned{}, true))
}

// setRequestID keeps a trusted proxy's id, unless it named the header in Connection
// (hop-by-hop), and gives every other request a new one.
func (p *Proxy) setRequestID(r *http.Request) {
	if r.Header.Get(RequestIDHeader) == "" || !p.trusted(r.RemoteAddr) ||
		namedInConnection(r.Header, RequestIDHeader) {
		r.Header.Set(RequestIDHeader, newRequestID())
	}
}

// newRequestID returns 32 random hex digits. The ids need to be unique, not secret, so
// the runtime's fast generator serves.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// copyEndToEnd copies the headers keys (canonical names) from src to dst, except those src
// names in its Connection header: those are hop-by-hop (RFC 9110, 7.6.1), and the
// ReverseProxy has stripped them from dst for that reason.
func copyEndToEnd(dst, src http.Header, keys ...string) {
	for _, k := range keys {
		if v, ok := src[k]; ok && !namedInConnection(src, k) {
			dst[k] = v
		}
	}
}

// namedInConnection reports whether h's Connection header lists name.
func namedInConnection(h http.Header, name string) bool {
	for _, v := range h["Connection"] {
		for token := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(token), name) {
				return true
			}
		}
	}
	return false
}

// trusted reports whether the peer at remoteAddr ("ip:port") may set forwarded headers.
func (p *Proxy) trusted(remoteAddr string) bool {
	if len(p.opts.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, pfx := range p.opts.TrustedProxies {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// answerError is the ReverseProxy's ErrorHandler: it classifies err, answers the client
// with a short plain-text body, and logs one line naming the upstream and the cause.
func (p *Proxy) answerError(w http.ResponseWriter, r *http.Request, err error) {
	p.answerUpstreamError(p.Upstream(), w, r, err)
}

// answerUpstreamError is answerError for an exchange with the upstream target.
func (p *Proxy) answerUpstreamError(target string, w http.ResponseWriter, r *http.Request, err error) {
	reason, status := classify(r, err)
	if reason != ReasonBodyTooLarge && reason != ReasonClientCanceled {
		switch requestBodyFault(r) {
		case ReasonBadRequest:
			// The client's request body ended before its length (a half-close mid-body)
			// or is malformed: the upstream saw a request cut short, through no fault of
			// its own.
			reason, status = ReasonBadRequest, http.StatusBadRequest
		case ReasonClientCanceled:
			// The client reset its connection while sending the body: gone, as a client
			// that resets while it waits for the answer.
			reason, status = ReasonClientCanceled, StatusClientClosedRequest
		}
	}
	if rec := recorderOf(w); rec != nil {
		rec.RecordUpstreamError(reason, status, err)
	}
	if reason == ReasonBodyTooLarge && r.ProtoMajor == 1 {
		// The rest of the body may still come: close (net/http's server does after
		// MaxBytesReader by itself; package h1serve's needs the header).
		w.Header().Set("Connection", "close")
	}
	if reason == ReasonClientCanceled {
		// Nobody is left to answer; the access log records 499. Returning without a
		// word would let net/http answer an empty 200 to whoever still reads.
		p.log.Debug("client went away before the upstream answered",
			"upstream", target, "method", r.Method, "path", r.URL.Path)
		panic(http.ErrAbortHandler)
	}
	if reason == ReasonBadRequest {
		w.Header().Set("Connection", "close")
		p.log.Warn("request body broke off or is malformed; answered 400", "method", r.Method, "path", r.URL.Path,
			"client", r.RemoteAddr, "error", err.Error())
	} else if reason == ReasonClientDeadline {
		// The client's doing: at warning level and naming it, not the upstream.
		p.log.Warn("the deadline the client set passed before the upstream answered", "error", err.Error(),
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	} else if reason == ReasonOverloaded {
		p.logOverloaded(r)
		w.Header().Set("Retry-After", "1")
	} else if reason == ReasonBodyTooLarge {
		p.log.Warn("request body over the limit", "limit_bytes", p.opts.MaxRequestBodyBytes,
			"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
	} else {
		p.log.Error("upstream request failed", "upstream", target, "reason", reason,
			"error", err.Error(), "method", r.Method, "path", r.URL.Path)
	}
	if IsGRPC(r) {
		code, msg := grpcCode(reason)
		WriteGRPCError(w, code, msg)
		return
	}
	h := w.Header()
	if r.ProtoMajor == 2 && reason == ReasonOverloaded {
		// Without a body the refusal is one HEADERS frame, which needs no send window: an
		// HTTP/2 client that gives none (SETTINGS_INITIAL_WINDOW_SIZE=0) would otherwise
		// hold each refused stream, with its request and goroutine, until window_timeout.
		h.Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}
	if wt := p.opts.WindowTimeout; r.ProtoMajor == 2 && wt > 0 {
		// The same client holds any other error's body only that long (the Transport's
		// answers go through watchProgress; ours here do not).
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wt))
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, errorBody(status, reason))
}

func errorBody(status int, reason string) string {
	switch reason {
	case ReasonClientDeadline:
		return "504 Gateway Timeout: the deadline the request set passed\n"
	case ReasonRefused:
		return "502 Bad Gateway: the upstream refused the connection\n"
	case ReasonReset:
		return "502 Bad Gateway: the upstream closed the connection\n"
	case ReasonTimeout:
		return "504 Gateway Timeout: the upstream did not answer in time\n"
	case ReasonBodyTooLarge:
		return "413 Request Entity Too Large: the request body is over the limit\n"
	case ReasonOverloaded:
		return "503 Service Unavailable: too many requests in flight to the upstream; retry\n"
	case ReasonBadRequest:
		return "400 Bad Request: the request body broke off or is malformed\n"
	}
	return fmt.Sprintf("%d %s\n", status, http.StatusText(status))
}

// classify maps an upstream round-trip error to a reason and the status to answer.
func classify(r *http.Request, err error) (reason string, status int) {
	var tooLarge *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &tooLarge):
		return ReasonBodyTooLarge, http.StatusRequestEntityTooLarge
	case errors.Is(err, errOverloaded):
		return ReasonOverloaded, http.StatusServiceUnavailable
	case errors.Is(context.Cause(r.Context()), errClientDeadline) && !errors.Is(err, syscall.ECONNREFUSED):
		return ReasonClientDeadline, http.StatusGatewayTimeout
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		return ReasonClientCanceled, StatusClientClosedRequest
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, os.ErrNotExist):
		// os.ErrNotExist: a unix socket path with nothing behind it.
		return ReasonRefused, http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout, http.StatusGatewayTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return ReasonReset, http.StatusBadGateway
	}
	return ReasonOther, http.StatusBadGateway
}

// dropH2CUpgrade removes the HTTP/1.1 upgrade to h2c (RFC 7540, 3.2; dropped by RFC 9113)
// from a request: forwarded, an app that accepts it would turn the connection into an
// HTTP/2 tunnel past header cleaning, the access log and the metrics, as nginx and Envoy
// also refuse to pass. HTTP2-Settings belongs to that upgrade alone.
func dropH2CUpgrade(h http.Header) {
	delete(h, "Http2-Settings")
	if up, ok := h["Upgrade"]; ok {
		for _, v := range up {
			for token := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(token), "h2c") {
					delete(h, "Upgrade")
					return
				}
			}
		}
	}
}

// climbsAboveRoot reports whether the decoded request path has more ".." segments at some
// point than segments before them ("/../x", "/a/../../x"; "%2e%2e" and "..%2f" arrive
// decoded; "..;x" counts, as Tomcat reads it as ".."). Joined under an upstream base path
// ("/api" + "/../admin"), such a path leaves it once the app resolves the dots, so it is
// refused, as nginx refuses a URI that climbs above its root.
func climbsAboveRoot(path string) bool {
	if !strings.Contains(path, "..") {
		return false
	}
	depth := 0
	for seg := range strings.SplitSeq(path, "/") {
		switch {
		case seg == "" || seg == ".":
		case seg == ".." || strings.HasPrefix(seg, "..;"):
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}
