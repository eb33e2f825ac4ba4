package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
)

// Upstream URL schemes that make the proxy speak HTTP/2 to the app in clear text, with
// prior knowledge (RFC 9113, 3.3): what gRPC servers and other HTTP/2-only apps listen for.
const (
	SchemeH2C     = "h2c"      // h2c://host:port
	SchemeUnixH2C = "unix+h2c" // unix+h2c:///path/to.sock
)

// useH2C turns t, built by newTransport, into an HTTP/2-only transport with prior
// knowledge for an h2c or unix+h2c upstream, and returns the URL requests are rewritten
// to. The standard library's HTTP/2 client does the protocol: one connection carries many
// concurrent streams, and a new one is opened when the app's stream limit is reached.
// Such a transport never takes the inline HTTP/1 path (newInlineTransport leaves its dial
// unset for these schemes).
func useH2C(u *url.URL, t *http.Transport, dialer *net.Dialer) (*url.URL, error) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	t.Protocols = &protos
	t.ForceAttemptHTTP2 = false
	if t.HTTP2 == nil {
		t.HTTP2 = &http.HTTP2Config{}
	}
	switch u.Scheme {
	case SchemeH2C:
		return &url.URL{Scheme: "http", Host: u.Host, Path: u.Path, RawPath: u.RawPath}, nil
	case SchemeUnixH2C:
		socket := u.Path
		if socket == "" {
			return nil, fmt.Errorf("proxy: upstream %s: no socket path; write unix+h2c:///path/to.sock", u)
		}
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		}
		return &url.URL{Scheme: "http", Host: "localhost"}, nil
	}
	return nil, fmt.Errorf("proxy: upstream %s: not an h2c scheme", u)
}
