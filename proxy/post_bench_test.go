package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"
)

// BenchmarkProxyPOST is BenchmarkProxyHotPath with a 13-byte request body: the
// http.Transport path, with its reuse guard and replayable body.
func BenchmarkProxyPOST(b *testing.B) {
	up := upstreamURL(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, standin.Hello)
	}))
	p, err := proxy.New(proxy.Options{Upstream: up})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.CloseIdleConnections)
	target := "http://" + serveAsBinary(b, drain.New(drain.Options{}).Handler(p)) + "/"
	client := newClient(b)
	payload := []byte("hello, world\n")
	post := func() {
		resp, err := client.Post(target, "text/plain", bytes.NewReader(payload))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(standin.Hello)) {
			b.Fatalf("POST: %d, %d bytes, %v", resp.StatusCode, n, err)
		}
	}
	post()
	b.ReportAllocs()
	for b.Loop() {
		post()
	}
}
