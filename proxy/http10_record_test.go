package proxy

import (
	"bufio"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestHTTP10ErrorsAreRecorded: the access log's upstream_error (and with it the drain's
// upstream_failed and client_canceled's 499) reaches the recorder for an HTTP/1.0 client
// too, whose writer is wrapped (http10Writer), with the progress timeouts on and off.
func TestHTTP10ErrorsAreRecorded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	ln.Close() // nothing listens there: refused
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no progress timeouts", Options{Upstream: down}},
		{"send_timeout", Options{Upstream: down, SendTimeout: time.Minute}},
	} {
		for _, proto := range []string{"HTTP/1.0", "HTTP/1.1"} {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				_, base, errs := inlineFront(t, tc.opts)
				c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(inlineWait))
				if _, err := c.Write([]byte("GET / " + proto + "\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("status %d, want 502", resp.StatusCode)
				}
				select {
				case got := <-errs:
					if got != "refused 502" {
						t.Errorf("recorded %q, want \"refused 502\"", got)
					}
				case <-time.After(inlineWait):
					t.Fatal("no upstream error recorded (the access log would have no upstream_error)")
				}
			})
		}
	}
}
