package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestParseGRPCTimeout(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1H", time.Hour, true},
		{"2M", 2 * time.Minute, true},
		{"3S", 3 * time.Second, true},
		{"250m", 250 * time.Millisecond, true},
		{"5u", 5 * time.Microsecond, true},
		{"99999999n", 99999999, true},
		{"", 0, false},
		{"S", 0, false},
		{"10", 0, false},
		{"123456789S", 0, false}, // more than 8 digits
		{"-1S", 0, false},
		{"1s", 0, false},
	} {
		got, ok := parseGRPCTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestIsGRPCAndMessageEncoding(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;charset=utf-8": true,
		"application/grpc-web": true, "application/grpcx": false, "application/json": false, "": false,
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("Content-Type", ct)
		if got := IsGRPC(r); got != want {
			t.Errorf("IsGRPC(%q) = %v; want %v", ct, got, want)
		}
	}
	if got := encodeGRPCMessage("50% off\n–"); got != "50%25 off%0A%E2%80%93" {
		t.Errorf("encodeGRPCMessage = %q", got)
	}
}

// When drainproxy answers a gRPC call itself, the answer is trailers-only: 200,
// application/grpc, grpc-status in the headers, no body.
func TestGRPCErrorAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, tt := range []struct {
		name     string
		opts     Options
		bodySize int
		want     string
	}{
		{"app down", Options{Upstream: &url.URL{Scheme: "h2c", Host: refused}}, 5, "14"},
		{"body over the limit", Options{Upstream: &url.URL{Scheme: "h2c", Host: refused}, MaxRequestBodyBytes: 4}, 50, "8"},
	} {
		p, err := New(tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", "/svc/Method", strings.NewReader(strings.Repeat("x", tt.bodySize)))
		r.Header.Set("Content-Type", "application/grpc")
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		res := w.Result()
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/grpc" ||
			res.Header.Get("Grpc-Status") != tt.want || !strings.HasPrefix(res.Header.Get("Grpc-Message"), "drainproxy: ") || w.Body.Len() != 0 {
			t.Errorf("%s: %d %v %q; want 200 application/grpc grpc-status %s, drainproxy's message, no body", tt.name, res.StatusCode, res.Header, w.Body.String(), tt.want)
		}
	}
}

// h2c and unix+h2c upstreams are spoken to in HTTP/2 with prior knowledge, GETs included
// (which would otherwise take the inline HTTP/1 path).
func TestH2CUpstreams(t *testing.T) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	app := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "app.sock")
	unix, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(tcp)
	go app.Serve(unix)
	t.Cleanup(func() { app.Close() })

	for _, u := range []*url.URL{{Scheme: "h2c", Host: tcp.Addr().String()}, {Scheme: "unix+h2c", Path: sock}} {
		p, err := New(Options{Upstream: u})
		if err != nil {
			t.Fatal(err)
		}
		front := httptest.NewServer(p)
		res, err := http.Get(front.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		front.Close()
		p.CloseIdleConnections()
		if res.StatusCode != 200 || string(body) != "HTTP/2.0" {
			t.Errorf("%s: %d %q; want the app to see HTTP/2.0", u, res.StatusCode, body)
		}
	}
}

// An https upstream that offers h2 by ALPN is spoken to in HTTP/2.
func TestHTTPSUpstreamNegotiatesH2(t *testing.T) {
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	app.EnableHTTP2 = true
	app.StartTLS()
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	_, tr, err := newTransport(Options{Upstream: u, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tr.TLSClientConfig.RootCAs = app.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	req, _ := http.NewRequestWithContext(context.Background(), "GET", app.URL, nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	tr.CloseIdleConnections()
	if string(body) != "HTTP/2.0" || res.TLS == nil || res.TLS.NegotiatedProtocol != http2.NextProtoTLS {
		t.Errorf("https upstream served %q over ALPN %v; want HTTP/2.0 over h2", body, res.TLS)
	}
}
