package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The gRPC health check calls grpc.health.v1.Health/Check (grpc/health/v1/health.proto)
// itself instead of through google.golang.org/grpc: a unary call is an HTTP/2 POST whose
// body is one message behind a 5-byte prefix (a compression flag and a length), and the
// two messages have one field each, HealthCheckRequest.service (1, string) and
// HealthCheckResponse.status (1, enum). protowire reads the answer field by field,
// skipping any it does not know, so the check does not depend on how the app's library
// encodes. grpc-go at run time would add its own connection management and a large
// dependency for one call every few seconds.

const grpcHealthPath = "/grpc.health.v1.Health/Check"

// HealthCheckResponse.ServingStatus values.
var grpcServingStatus = map[uint64]string{0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

// grpcProbe is how a gRPC app's health is asked.
type grpcProbe struct {
	client  *http.Client // HTTP/2 only: h2c, or h2 over TLS for an https upstream
	target  string
	service string
	body    []byte // the framed HealthCheckRequest
}

// probeFor builds the probe of upstream u with c's options.
func (c *Checker) probeFor(u *url.URL) *probe {
	o := c.o()
	pr := newProbe(u, o.Path)
	if o.GRPC {
		pr.grpc = newGRPCProbe(u, pr.dial, o.GRPCService)
	}
	return pr
}

func newGRPCProbe(u *url.URL, dial func(context.Context) (net.Conn, error), service string) *grpcProbe {
	var protos http.Protocols
	scheme, host := "http", u.Host
	switch u.Scheme {
	case "https":
		scheme = "https"
		protos.SetHTTP2(true)
	case "unix", "unix+h2c":
		host = "localhost"
		protos.SetUnencryptedHTTP2(true)
	default: // gRPC is HTTP/2: an http:// upstream is asked with prior knowledge too
		protos.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DialTLSContext:    nil,
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
		Protocols:         &protos,
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true, // every check proves a fresh connection works
	}
	msg := protowire.AppendTag(nil, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, service)
	if service == "" {
		msg = nil // the default value is not written
	}
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	return &grpcProbe{
		client:  &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		target:  (&url.URL{Scheme: scheme, Host: host, Path: grpcHealthPath}).String(),
		service: service,
		body:    append(body, msg...),
	}
}

// describeGRPC names the check for logs.
func (g *grpcProbe) describe() string {
	return fmt.Sprintf("gRPC %s service=%q", grpcHealthPath, g.service)
}

// checkGRPC runs one gRPC health check: it passes when the app answers SERVING.
func (c *Checker) checkGRPC(ctx context.Context, g *grpcProbe) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.target, bytes.NewReader(g.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "drainproxy-health-check")
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set("Grpc-Timeout", strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)+"m")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return c.describe(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return c.describe(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gRPC health check answered HTTP %d, not a gRPC answer", resp.StatusCode)
	}
	code, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if code == "" { // a trailers-only answer carries them in the headers
		code, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	switch code {
	case "0":
	case "":
		return errors.New("gRPC health check: the answer has no grpc-status")
	case "5":
		return fmt.Errorf("gRPC health check: the app does not know service %q (NOT_FOUND)", g.service)
	case "12":
		return errors.New("gRPC health check: the app does not serve grpc.health.v1.Health (UNIMPLEMENTED)")
	default:
		return fmt.Errorf("gRPC health check: grpc-status %s %s", code, msg)
	}
	status, err := parseHealthResponse(body)
	if err != nil {
		return fmt.Errorf("gRPC health check: %w", err)
	}
	if status != 1 {
		name, ok := grpcServingStatus[status]
		if !ok {
			name = strconv.FormatUint(status, 10)
		}
		return fmt.Errorf("gRPC health check: service %q is %s", g.service, name)
	}
	return nil
}

// parseHealthResponse returns HealthCheckResponse.status from one framed message.
func parseHealthResponse(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, errors.New("the answer holds no message")
	}
	if b[0] != 0 {
		return 0, errors.New("the answer is compressed, though the check asked for none")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(len(b)-5) < uint64(n) {
		return 0, errors.New("the answer's message is cut short")
	}
	m := b[5 : 5+n]
	var status uint64 // absent: the default, UNKNOWN
	for len(m) > 0 {
		num, typ, k := protowire.ConsumeTag(m)
		if k < 0 {
			return 0, protowire.ParseError(k)
		}
		m = m[k:]
		if num == 1 && typ == protowire.VarintType {
			v, k := protowire.ConsumeVarint(m)
			if k < 0 {
				return 0, protowire.ParseError(k)
			}
			status, m = v, m[k:]
			continue
		}
		k = protowire.ConsumeFieldValue(num, typ, m)
		if k < 0 {
			return 0, protowire.ParseError(k)
		}
		m = m[k:]
	}
	return status, nil
}
