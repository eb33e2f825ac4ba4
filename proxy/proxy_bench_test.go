package proxy_test

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/drainproxy/drainproxy/drain"
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
	addr := serveOn(b, drain.New(drain.Options{}).Handler(p), nil)
	benchmarkGET(b, "http://"+addr+"/")
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
