package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/internal/badupstream"
	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/internal/testlog"
	"github.com/drainproxy/drainproxy/proxy"
)

// hugeHeadUpstream answers every request with a header line of size bytes, written from
// one small buffer, until the peer goes away.
func hugeHeadUpstream(t *testing.T, size int64) *url.URL {
	t.Helper()
	addr, _ := testenv.ServeRaw(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Huge: ")
			if badupstream.WriteFill(c, size) != nil {
				return
			}
			io.WriteString(c, "\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return &url.URL{Scheme: "http", Host: addr}
}

// TestHugeResponseHeadIsBounded sends a 256 MiB header line through both paths: the
// client gets a 502, the proxy logs one line naming the limit, and the request allocates
// a bounded amount (it took the inline path to 863 MB of RSS before the cap).
func TestHugeResponseHeadIsBounded(t *testing.T) {
	up := hugeHeadUpstream(t, 256<<20)
	log := &testlog.Buffer{}
	p, err := proxy.New(proxy.Options{Upstream: up,
		Logger: hclog.New(&hclog.LoggerOptions{Output: log, Level: hclog.Info})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	base := "http://" + serveOn(t, p, nil)
	client := newClient(t)

	for _, method := range []string{"GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("x") // the http.Transport path
		}
		req, _ := http.NewRequest(method, base+"/", body)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		runtime.ReadMemStats(&after)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: %d, want 502", method, resp.StatusCode)
		}
		// Default cap 64 KiB: a few copies of it, not hundreds of MiB.
		if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
			t.Errorf("%s: one 256 MiB header line allocated %d MiB in the process", method, n>>20)
		}
	}
	if n := strings.Count(log.String(), "over the limit of 65536 bytes") +
		strings.Count(log.String(), "exceeded 65536 bytes"); n != 2 {
		t.Errorf("%d log lines name the 64 KiB limit, want 2 (one per request):\n%s", n, log)
	}
}
