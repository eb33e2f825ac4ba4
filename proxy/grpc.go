package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// gRPC status codes drainproxy answers with itself (google.golang.org/grpc/codes).
const (
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcUnavailable       = 14
)

// GRPCUnavailable is gRPC's UNAVAILABLE, the code for "try again" (clients with a retry
// policy retry it), for answers drainproxy gives in front of a down app.
const GRPCUnavailable = grpcUnavailable

// IsGRPC reports whether r is a gRPC call (application/grpc, application/grpc+proto, ...,
// and gRPC-Web, whose clients read a trailers-only answer the same way).
func IsGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") &&
		(len(ct) == len("application/grpc") || strings.ContainsRune("+;-", rune(ct[len("application/grpc")])))
}

// withGRPCDeadline bounds r's context by its grpc-timeout header, as the gRPC server would:
// a call whose deadline passes while the proxy waits for the upstream is answered
// DEADLINE_EXCEEDED instead of being left to the client's own timer. The header still
// goes to the upstream, which keeps its own count. A missing or malformed header changes
// nothing.
func withGRPCDeadline(r *http.Request) (*http.Request, context.CancelFunc) {
	d, ok := parseGRPCTimeout(r.Header.Get("Grpc-Timeout"))
	if !ok {
		return r, func() {}
	}
	ctx, cancel := context.WithTimeoutCause(r.Context(), d, errClientDeadline)
	return r.WithContext(ctx), cancel
}

// errClientDeadline is the cause of a request context that ended at the deadline the
// client set (grpc-timeout): the client's choice, not the upstream's slowness, so passive
// health does not count it.
var errClientDeadline = errors.New("the deadline the client set (grpc-timeout) passed")

// parseGRPCTimeout parses a grpc-timeout value: at most 8 digits and a unit, H M S m u n
// (PROTOCOL-HTTP2.md in the gRPC repository).
func parseGRPCTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true // 8 digits of hours stay far below overflow
}

// grpcCode maps the reason the proxy answers instead of the upstream to a gRPC status,
// the way Envoy does for its own replies: the upstream unreachable or gone is
// UNAVAILABLE (which clients may retry), a call out of time DEADLINE_EXCEEDED, a message
// over the body limit RESOURCE_EXHAUSTED.
func grpcCode(reason string) (code int, message string) {
	switch reason {
	case ReasonTimeout:
		return grpcDeadlineExceeded, "drainproxy: the upstream did not answer in time"
	case ReasonClientDeadline:
		return grpcDeadlineExceeded, "drainproxy: the call's deadline passed"
	case ReasonBodyTooLarge:
		return grpcResourceExhausted, "drainproxy: the request body is over the limit"
	case ReasonRefused:
		return grpcUnavailable, "drainproxy: the upstream refused the connection"
	case ReasonReset:
		return grpcUnavailable, "drainproxy: the upstream closed the connection"
	case ReasonOverloaded:
		return grpcUnavailable, "drainproxy: too many requests in flight to the upstream"
	}
	return grpcUnavailable, "drainproxy: the upstream request failed"
}

// WriteGRPCError answers a gRPC call in trailers-only form: status 200, content type
// application/grpc, and grpc-status and grpc-message in the only header block, which
// ends the stream. gRPC clients report the code and message (a text 502 would reach them
// as "Unavailable: unexpected HTTP status code"). Nothing may have been written yet.
func WriteGRPCError(w http.ResponseWriter, code int, message string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", encodeGRPCMessage(message))
	w.WriteHeader(http.StatusOK)
}

// encodeGRPCMessage percent-encodes what grpc-message may not carry as it is: bytes
// outside printable ASCII, and '%'.
func encodeGRPCMessage(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// endGRPCStreams is the ReverseProxy's ModifyResponse for gRPC answers: when the app's
// stream breaks after the response began (the app went away, or the call's deadline
// passed), the client gets grpc-status trailers, UNAVAILABLE or DEADLINE_EXCEEDED, after
// the messages it has, as a gRPC server would send, instead of a stream reset that gRPC
// clients report as INTERNAL.
func (p *Proxy) endGRPCStreams(res *http.Response) error {
	if res.Request == nil || !IsGRPC(res.Request) || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/grpc") {
		return nil
	}
	res.Body = &grpcBody{ReadCloser: res.Body, res: res, p: p}
	return nil
}

// grpcBody turns a failed read of a gRPC response into its end, with trailers that say why.
type grpcBody struct {
	io.ReadCloser
	res *http.Response
	p   *Proxy
}

func (b *grpcBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if err == nil || err == io.EOF {
		return n, err
	}
	ctx := b.res.Request.Context()
	reason := ReasonReset
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		reason = ReasonTimeout // the call's grpc-timeout
	case ctx.Err() != nil:
		return n, err // the client went away: nobody to tell
	}
	code, msg := grpcCode(reason)
	if b.res.Trailer == nil {
		b.res.Trailer = make(http.Header)
	}
	if b.res.Trailer.Get("Grpc-Status") == "" {
		b.res.Trailer.Set("Grpc-Status", strconv.Itoa(code))
		b.res.Trailer.Set("Grpc-Message", encodeGRPCMessage(msg+" in the middle of the response"))
	}
	b.p.log.Error("upstream stream failed", "upstream", b.p.Upstream(), "reason", reason,
		"error", err.Error(), "path", b.res.Request.URL.Path)
	return n, io.EOF
}
