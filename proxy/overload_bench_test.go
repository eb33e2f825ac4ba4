package proxy_test

import (
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"
)

// BenchmarkProxyHotPathAsShipped is BenchmarkProxyHotPathWithProgressTimeouts with the
// guards of issue 23 as the binary runs them: the cap on requests in flight
// (upstream.max_requests 1024) and the HTTP/2 window timeout. Compare the two, interleaved
// (-count), for the cost of the cap on the request path.
func BenchmarkProxyHotPathAsShipped(b *testing.B) {
	up := upstreamURL(b, standin.Handler())
	opts := progressOptions(up.String(), 60*time.Second)
	opts.UpgradeIdleTimeout = time.Hour
	opts.WindowTimeout = 10 * time.Second
	opts.Overload = proxy.NewOverload(proxy.DefaultMaxRequests, proxy.DefaultQueueTimeout)
	p, err := proxy.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.CloseIdleConnections)
	addr := serveOn(b, drain.New(drain.Options{}).Handler(p), nil)
	benchmarkGET(b, "http://"+addr+"/")
}
