package proxy_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/proxy"
)

// Issue 23, item 7: "Upgrade: h2c" and HTTP2-Settings are never forwarded. An app that
// accepts the upgrade would get a raw HTTP/2 tunnel past header cleaning, the access log
// and the metrics; the request goes on as plain HTTP/1.1 instead.
func TestUpgradeToH2CIsStripped(t *testing.T) {
	up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" || r.Header.Get("Http2-Settings") != "" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", r.Header.Get("Upgrade"))
			w.WriteHeader(http.StatusSwitchingProtocols) // as an h2c-upgrading app would
			return
		}
		io.WriteString(w, "plain")
	}))
	f := startFront(t, proxy.Options{Upstream: up}, false)
	for _, hdr := range []map[string]string{
		{"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "Http2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"},
		{"Connection": "Upgrade", "Upgrade": "H2C"},
		{"Http2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}, // not named in Connection: still HTTP/2's only
	} {
		req, _ := http.NewRequest("GET", f.URL+"/", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Errorf("%v: %v", hdr, err)
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			resp.Body.Close() // the tunnel: close it, or the servers' cleanup waits for it
			t.Errorf("%v: 101 Switching Protocols reached the client: the app saw the upgrade", hdr)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "plain" {
			t.Errorf("%v: %d %q, want 200 \"plain\": the app saw the upgrade", hdr, resp.StatusCode, body)
		}
	}
}
