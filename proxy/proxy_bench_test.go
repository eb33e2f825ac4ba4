package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/h1serve"
	"github.com/drainproxy/drainproxy/internal/clientconn"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"
)

// BenchmarkProxyHotPath measures one proxied GET of the stand-in's 13-byte "/" as the binary
// serves it: a real client over a loopback keep-alive connection, drain's per-request
// wrapper around the proxy, and a loopback keep-alive pool to a real upstream. Client,
// proxy and upstream share the process, so allocs/op counts all three;
// BenchmarkUpstreamDirect is the same request without the proxy, to subtract.
func BenchmarkProxyHotPath(b *testing.B) {
	up := upstreamURL(b, standin.Handler())
	p, err := proxy.New(proxy.Options{Upstream: up})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.CloseIdleConnections)
	addr := serveAsBinary(b, drain.New(drain.Options{}).Handler(p))
	benchmarkGET(b, "http://"+addr+"/")
}

// BenchmarkProxyHotPathH1serve is BenchmarkProxyHotPathAsShipped (the default progress
// timeouts and cap on requests in flight) on the server the binary uses by default
// (server.engine = "h1serve", with CancelOnFIN and the half-close watch's ConnContext): the
// per-request layers as a default drainproxy runs them.
func BenchmarkProxyHotPathH1serve(b *testing.B) {
	up := upstreamURL(b, standin.Handler())
	opts := progressOptions(up.String(), 60*time.Second)
	opts.ResponseHeaderTimeout = 60 * time.Second
	opts.UpgradeIdleTimeout = time.Hour
	opts.WindowTimeout = 10 * time.Second
	opts.Overload = proxy.NewOverload(proxy.DefaultMaxRequests, proxy.DefaultQueueTimeout)
	p, err := proxy.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.CloseIdleConnections)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &h1serve.Server{Handler: drain.New(drain.Options{}).Handler(p), CancelOnFIN: true,
		ConnContext: clientconn.ConnContext}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	b.Cleanup(func() {
		srv.Close()
		<-served
	})
	benchmarkGET(b, "http://"+ln.Addr().String()+"/")
}

// serveAsBinary serves h as serveOn does, on a server that keeps each request's
// connection in its context as the binary's does (the proxy's watch of HTTP/1 clients).
func serveAsBinary(b *testing.B, h http.Handler) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: clientconn.ConnContext}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	b.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String()
}

// BenchmarkUpstreamDirect is BenchmarkProxyHotPath's request sent straight to the upstream.
func BenchmarkUpstreamDirect(b *testing.B) {
	up := upstreamURL(b, standin.Handler())
	benchmarkGET(b, up.String()+"/")
}

func benchmarkGET(b *testing.B, target string) {
	u, err := url.Parse(target)
	if err != nil {
		b.Fatal(err)
	}
	client := newClient(b)
	req := &http.Request{Method: "GET", URL: u, Header: http.Header{}, Host: u.Host}
	get := func() {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(standin.Hello)) {
			b.Fatalf("GET %s: %d, %d bytes, %v", target, resp.StatusCode, n, err)
		}
	}
	get() // open the keep-alive connections outside the measurement
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}
