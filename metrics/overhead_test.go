package metrics_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/health"
	"github.com/drainproxy/drainproxy/metrics"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"
)

// BenchmarkProxiedRequest is one keep-alive GET through the drain handler and the proxy to
// the stand-in app, all on 127.0.0.1, without and with the observers drainproxy installs
// (metrics and the passive health count). The difference is what recording costs a
// request; compare the two with -count and benchstat.
func BenchmarkProxiedRequest(b *testing.B) {
	for _, bc := range []struct {
		name     string
		observed bool
	}{{"observers=none", false}, {"observers=metrics+health", true}} {
		b.Run(bc.name, func(b *testing.B) {
			upstream := benchServe(b, standin.Handler())
			u := &url.URL{Scheme: "http", Host: upstream}
			p, err := proxy.New(proxy.Options{Upstream: u})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(p.CloseIdleConnections)
			d := drain.New(drain.Options{})
			if bc.observed {
				d.Observe(metrics.New(metrics.Options{Stats: d.Stats}))
				d.Observe(health.New(health.Options{Upstream: u}))
			}
			front := "http://" + benchServe(b, d.Handler(p)) + "/"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			b.Cleanup(client.CloseIdleConnections)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(front)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

func benchServe(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
