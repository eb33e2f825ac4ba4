package proxy_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
)

// An HTTP/2 client that gives a response no send window (SETTINGS_INITIAL_WINDOW_SIZE=0)
// has its stream reset after WindowTimeout, not after the much longer SendTimeout, and
// the exchange says window_timeout.
func TestHTTP2StreamWithoutWindowIsReset(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 64<<10))
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	p, err := proxy.New(proxy.Options{Upstream: u, SendTimeout: time.Minute, WindowTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	d := drain.New(drain.Options{})
	seen := make(chan drain.Exchange, 4)
	d.Observe(exchanges(seen))
	ts := httptest.NewUnstartedServer(d.Handler(p))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)

	c, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/big"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
	start := time.Now()
	c.SetReadDeadline(start.Add(20 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM for the stream without window: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			fr.WriteSettingsAck()
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			break
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("reset after %s, want about WindowTimeout (300ms), far below SendTimeout (1m)", took)
	}
	if x := <-seen; x.UpstreamError != proxy.ReasonWindowTimeout {
		t.Errorf("the exchange says %q, want %q", x.UpstreamError, proxy.ReasonWindowTimeout)
	}
}
