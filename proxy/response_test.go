package proxy_test

// Tests of what the proxy passes from the app to the client unchanged, and of what it
// records when the app's response breaks off. HTTP/1.0 clients and bytes read up to a cut
// use raw TCP (target_test.go's helpers).

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
)

// untypedBody looks like a page to net/http's sniffer.
const untypedBody = "<html><body>a user's file</body></html>"

func TestAppHeadersPassUnchanged(t *testing.T) {
	up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/untyped":
			w.Header()["Content-Type"] = nil // no Content-Type at all, and none sniffed
		case "/typed":
			w.Header().Set("Content-Type", "application/x-custom")
		}
		io.WriteString(w, untypedBody)
	}))
	check := func(t *testing.T, resp *http.Response, body []byte, path string) {
		t.Helper()
		if string(body) != untypedBody {
			t.Fatalf("%s: body %q", path, body)
		}
		want := []string(nil)
		if path == "/typed" {
			want = []string{"application/x-custom"}
		}
		if got := resp.Header["Content-Type"]; !equalStrings(got, want) {
			t.Errorf("%s over %s: Content-Type %q, want %q as the app sent it", path, resp.Proto, got, want)
		}
	}
	bothWays(t, func(t *testing.T, viaDrain bool) {
		f := startFront(t, proxy.Options{Upstream: up}, viaDrain)
		for _, path := range []string{"/untyped", "/typed"} {
			// GET takes the inline path, a request with a body the http.Transport.
			resp, body := f.get(t, path)
			check(t, resp, body, path)
			req, _ := http.NewRequest("POST", f.URL+path, strings.NewReader("x"))
			resp, body = f.do(t, req)
			check(t, resp, body, path)
		}
	})

	t.Run("HTTP/2 client", func(t *testing.T) {
		p, err := proxy.New(proxy.Options{Upstream: up})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.CloseIdleConnections)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: p, Protocols: new(http.Protocols)}
		srv.Protocols.SetUnencryptedHTTP2(true)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{}}
		tr.Protocols.SetUnencryptedHTTP2(true)
		t.Cleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: tr}
		for _, path := range []string{"/untyped", "/typed"} {
			resp, err := client.Get("http://" + ln.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s: answered over %s, want HTTP/2", path, resp.Proto)
			}
			check(t, resp, body, path)
		}
	})
}

func TestNo1xxToHTTP10Clients(t *testing.T) {
	up := newScriptedUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
		return true
	})
	f := startFront(t, proxy.Options{Upstream: up.URL}, true)
	for _, tc := range []struct{ name, request string }{
		{"GET, inline path", "GET / HTTP/1.0\r\nHost: app.example\r\n\r\n"},
		{"POST, Transport path", "POST / HTTP/1.0\r\nHost: app.example\r\nContent-Length: 2\r\n\r\nhi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rawExchange(t, f.Addr, tc.request)
			if !strings.HasPrefix(got, "HTTP/1.0 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\nfinal") {
				t.Errorf("an HTTP/1.0 client got %q, want the final response alone", got)
			}
			if strings.Contains(got, "Link:") {
				t.Errorf("the 103's header leaked into the final response: %q", got)
			}
		})
	}
	t.Run("HTTP/1.1 still gets it", func(t *testing.T) {
		got := rawExchange(t, f.Addr, "GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(got, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n") {
			t.Errorf("an HTTP/1.1 client got %q, want the 103 then the final response", got)
		}
	})
}

func TestResponseCutShortIsRecordedTruthfully(t *testing.T) {
	big := strings.Repeat("x", 100<<10) // more than the server's buffers hold
	for _, tc := range []struct {
		name    string
		head    string // the response head the upstream sends
		body    string // then these bytes, then it closes
		reset   bool   // closes with a reset instead of a FIN
		chunked bool
	}{
		{"close before the length, short", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "only ten b", false, false},
		{"close before the length, long", "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", big, false, false},
		{"close right after the head", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "", false, false},
		{"close inside a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "a\r\n0123456789\r\n14\r\nabc", false, true},
		{"reset", "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", big, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newScriptedUpstream(t, func(c net.Conn, req *http.Request) bool {
				io.WriteString(c, tc.head+tc.body)
				if tc.reset {
					c.(*net.TCPConn).SetLinger(0)
				}
				return false
			})
			log, logged := captureLog(t)
			f := startFront(t, proxy.Options{Upstream: up.URL, Logger: log}, true)
			for _, method := range []string{"GET", "POST"} { // inline path, Transport path
				t.Run(method, func(t *testing.T) {
					got := rawExchange(t, f.Addr, method+" / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
					x := f.lastExchange(t)
					if x.UpstreamError != proxy.ReasonReset {
						t.Errorf("upstream_error %q, want %q", x.UpstreamError, proxy.ReasonReset)
					}
					if x.Status != http.StatusOK {
						t.Errorf("status %d recorded, want the 200 the client got", x.Status)
					}
					head, body, ok := strings.Cut(got, "\r\n\r\n")
					if !ok || !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") {
						t.Fatalf("the client got %q, want the 200's head and then the bytes that came", got[:min(len(got), 200)])
					}
					received := int64(len(body))
					if tc.chunked {
						n, err := io.Copy(io.Discard, httputil.NewChunkedReader(strings.NewReader(body)))
						if err == nil {
							t.Errorf("the chunked body ends cleanly: %q", body)
						}
						received = n
					}
					if x.BytesOut != received {
						t.Errorf("bytes_out %d, but the client received %d body bytes", x.BytesOut, received)
					}
					if !tc.reset && !tc.chunked && received != int64(len(tc.body)) {
						t.Errorf("the client received %d body bytes of the %d the upstream sent", received, len(tc.body))
					}
					if tc.chunked && received != 13 {
						t.Errorf("the client received %d body bytes of the 13 the upstream sent", received)
					}
				})
			}
			if n := strings.Count(logged.String(), "upstream response cut short"); n != 2 {
				t.Errorf("%d log lines say the response was cut short, want 2:\n%s", n, logged.String())
			}
		})
	}
}

// TestCompleteResponsesRecordNoError guards the other side: bodies that end as declared
// (by length, by the last chunk, by close for HTTP/1.0 framing) carry no upstream_error.
func TestCompleteResponsesRecordNoError(t *testing.T) {
	for _, tc := range []struct{ name, response string }{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nwhole\r\n0\r\n\r\n"},
		{"until close", "HTTP/1.0 200 OK\r\n\r\nwhole"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newScriptedUpstream(t, func(c net.Conn, req *http.Request) bool {
				io.WriteString(c, tc.response)
				return false
			})
			f := startFront(t, proxy.Options{Upstream: up.URL}, true)
			for _, method := range []string{"GET", "POST"} {
				got := rawExchange(t, f.Addr, method+" / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				x := f.lastExchange(t)
				if x.UpstreamError != "" || x.BytesOut != 5 || !strings.Contains(got, "whole") {
					t.Errorf("%s: upstream_error %q, bytes_out %d, client got %q; want no error, 5 bytes", method, x.UpstreamError, x.BytesOut, got)
				}
			}
		})
	}
}

// Over HTTP/2 the client gets every byte that came, then a reset stream.
func TestResponseCutShortOverHTTP2(t *testing.T) {
	const sent = 50 << 10
	up := newScriptedUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", sent))
		return false
	})
	p, err := proxy.New(proxy.Options{Upstream: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	d := drain.New(drain.Options{})
	seen := make(exchanges, 4)
	d.Observe(seen)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.Handler(p), Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || err == nil {
		t.Errorf("%s: the body ended cleanly after %d bytes, want a reset stream", resp.Proto, n)
	}
	if n != sent {
		t.Errorf("the client got %d body bytes of the %d that came", n, sent)
	}
	select {
	case x := <-seen:
		if x.UpstreamError != proxy.ReasonReset || x.BytesOut != n {
			t.Errorf("exchange: upstream_error %q, bytes_out %d; want %q, %d", x.UpstreamError, x.BytesOut, proxy.ReasonReset, n)
		}
	case <-time.After(waitLimit):
		t.Fatal("no exchange observed")
	}
}
