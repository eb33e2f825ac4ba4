package proxy_test

// Behaviour tests for the proxy on real 127.0.0.1 sockets: an upstream (the stand-in app or
// a handler built for the test) behind the proxy served by a real http.Server, and a real
// client. Whatever the binary depends on (streaming, upgrades, error answers) also runs
// through drain's per-request wrapper, which is what the binary puts around the proxy.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/websocket"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/h1serve"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/standin"

	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/internal/testlog"
)

// waitLimit bounds every wait on something the test expects to happen; reaching it is a
// failure (a hang), never a statement about speed.
const waitLimit = 10 * time.Second

// serveOn serves h with a real http.Server on a fresh 127.0.0.1 port and returns the
// address. connState, if set, is the server's ConnState hook.
func serveOn(t testing.TB, h http.Handler, connState func(net.Conn, http.ConnState)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnState: connState}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String()
}

// serveH1 is serveOn with package h1serve's server, set up as drainproxy's server.engine
// = "h1serve" is (without the ConnContext of the half-close watch, as serveOn).
func serveH1(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h1serve.Server{Handler: h, CancelOnFIN: true}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String()
}

// upstreamURL serves h as an upstream and returns its http:// URL.
func upstreamURL(t testing.TB, h http.Handler) *url.URL {
	t.Helper()
	return &url.URL{Scheme: "http", Host: serveOn(t, h, nil)}
}

// front is a proxy served on a real listener, with a client of its own.
type front struct {
	URL    string // http://127.0.0.1:port of the proxy
	Addr   string // 127.0.0.1:port of the proxy
	Proxy  *proxy.Proxy
	Client *http.Client
	// Seen receives every finished exchange when the proxy runs behind drain's wrapper
	// (nil otherwise): what an access log would see, including the upstream error reason.
	Seen chan drain.Exchange
}

// exchanges is a drain.Observer that hands each finished exchange to the test.
type exchanges chan drain.Exchange

func (c exchanges) Observe(x *drain.Exchange) {
	select {
	case c <- *x:
	default: // the test did not want this many; never block the request
	}
}

// startFront builds the proxy from opts and serves it, behind drain's wrapper when
// viaDrain is set.
func startFront(t testing.TB, opts proxy.Options, viaDrain bool) *front {
	t.Helper()
	p, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	f := &front{Proxy: p}
	var h http.Handler = p
	var connState func(net.Conn, http.ConnState)
	if viaDrain {
		d := drain.New(drain.Options{})
		f.Seen = make(chan drain.Exchange, 64)
		d.Observe(exchanges(f.Seen))
		h = d.Handler(p)
	}
	if os.Getenv("DRAINPROXY_SERVER_ENGINE") == "net/http" { // CI runs the suite on both engines
		f.Addr = serveOn(t, h, connState)
	} else { // drainproxy's default
		f.Addr = serveH1(t, h)
	}
	f.URL = "http://" + f.Addr
	f.Client = newClient(t)
	return f
}

// newClient returns a client with its own keep-alive pool, closed at cleanup.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// bothWays runs test once against the bare proxy and once behind drain's wrapper.
func bothWays(t *testing.T, test func(t *testing.T, viaDrain bool)) {
	t.Run("bare", func(t *testing.T) { test(t, false) })
	t.Run("drain", func(t *testing.T) { test(t, true) })
}

// lastExchange waits for the exchange the drain wrapper observed for the last request.
func (f *front) lastExchange(t testing.TB) drain.Exchange {
	t.Helper()
	select {
	case x := <-f.Seen:
		return x
	case <-time.After(waitLimit):
		t.Fatal("drain's wrapper observed no exchange")
		return drain.Exchange{}
	}
}

// do sends req with the front's client and returns the response with its whole body.
func (f *front) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := f.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func (f *front) get(t testing.TB, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", f.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.do(t, req)
}

// headersSeen asks the stand-in's /headers what the upstream received.
func (f *front) headersSeen(t testing.TB, req *http.Request) standin.Request {
	t.Helper()
	resp, body := f.do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /headers: %d %s", resp.StatusCode, body)
	}
	var got standin.Request
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("GET /headers: %v in %s", err, body)
	}
	return got
}

func captureLog(t testing.TB) (hclog.Logger, *testlog.Buffer) {
	buf := &testlog.Buffer{}
	return hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug}), buf
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	return testenv.FreeAddr(t)
}

// release returns a channel closed at cleanup at the latest, for upstream handlers that
// block until the test lets them go.
func release(t testing.TB) (ch chan struct{}, open func()) {
	ch = make(chan struct{})
	var once sync.Once
	open = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(open)
	return ch, open
}

func TestRequestsAndResponsesPassUnchanged(t *testing.T) {
	up := upstreamURL(t, standin.Handler())
	bothWays(t, func(t *testing.T, viaDrain bool) {
		f := startFront(t, proxy.Options{Upstream: up}, viaDrain)

		t.Run("GET with headers", func(t *testing.T) {
			req, _ := http.NewRequest("GET", f.URL+"/headers?q=1&r=two%20words", nil)
			req.Header.Set("X-Custom", "value with spaces")
			req.Header.Add("X-Multi", "one")
			req.Header.Add("X-Multi", "two")
			req.Header.Set("Authorization", "Bearer abc")
			req.Header.Set("Cookie", "a=1; b=2")
			got := f.headersSeen(t, req)
			if got.Method != "GET" || got.Path != "/headers?q=1&r=two%20words" {
				t.Errorf("upstream saw %s %s, want GET /headers?q=1&r=two%%20words", got.Method, got.Path)
			}
			for name, want := range map[string][]string{
				"X-Custom":      {"value with spaces"},
				"X-Multi":       {"one", "two"},
				"Authorization": {"Bearer abc"},
				"Cookie":        {"a=1; b=2"},
			} {
				if g := got.Header[name]; !equalStrings(g, want) {
					t.Errorf("upstream saw %s: %q, want %q", name, g, want)
				}
			}
		})

		t.Run("POST 8 MiB", func(t *testing.T) {
			body := make([]byte, 8<<20)
			rand.Read(body)
			req, _ := http.NewRequest("POST", f.URL+"/echo", bytes.NewReader(body))
			req.Header.Set("X-Custom", "post")
			resp, got := f.do(t, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("POST /echo: %d", resp.StatusCode)
			}
			if n := resp.Header.Get("X-Echo-Bytes"); n != fmt.Sprint(len(body)) {
				t.Errorf("upstream read %s bytes, want %d", n, len(body))
			}
			if !bytes.Equal(got, body) {
				t.Errorf("echoed body differs: %d bytes back, want the %d sent", len(got), len(body))
			}
		})

		t.Run("POST of unknown length", func(t *testing.T) {
			body := bytes.Repeat([]byte("chunked body\n"), 10000)
			req, _ := http.NewRequest("POST", f.URL+"/echo", struct{ io.Reader }{bytes.NewReader(body)})
			resp, got := f.do(t, req)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
				t.Errorf("POST /echo chunked: %d with %d bytes, want 200 with the %d sent", resp.StatusCode, len(got), len(body))
			}
		})

		t.Run("status passes", func(t *testing.T) {
			for _, code := range []int{http.StatusCreated, http.StatusNotFound, http.StatusServiceUnavailable} {
				resp, _ := f.get(t, fmt.Sprintf("/status?code=%d", code))
				if resp.StatusCode != code {
					t.Errorf("status %d came back as %d", code, resp.StatusCode)
				}
			}
		})
	})
}

func TestResponseHeadersAndBodyComeBack(t *testing.T) {
	up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", "yes")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Set("Content-Type", "application/x-custom")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, r.Method+" "+r.URL.RequestURI())
	}))
	up.Path = "/base"
	f := startFront(t, proxy.Options{Upstream: up}, true)
	resp, body := f.get(t, "/x/y?z=1")
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("status %d, want 202", resp.StatusCode)
	}
	if got := resp.Header.Values("Set-Cookie"); !equalStrings(got, []string{"a=1", "b=2"}) {
		t.Errorf("Set-Cookie %q, want both cookies", got)
	}
	if resp.Header.Get("X-App") != "yes" || resp.Header.Get("Content-Type") != "application/x-custom" {
		t.Errorf("response headers %v lost the app's", resp.Header)
	}
	// The upstream URL's path is a prefix of every request path.
	if string(body) != "GET /base/x/y?z=1" {
		t.Errorf("upstream saw %q, want %q", body, "GET /base/x/y?z=1")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var requestIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestForwardedHeadersTrust(t *testing.T) {
	up := upstreamURL(t, standin.Handler())
	forged := map[string]string{
		"X-Forwarded-For":   "203.0.113.7",
		"X-Forwarded-Host":  "forged.example",
		"X-Forwarded-Proto": "https",
		"Forwarded":         "for=203.0.113.7;proto=https",
		"X-Request-Id":      "client-chosen-id",
	}
	request := func(t *testing.T, f *front, headers map[string]string) standin.Request {
		req, _ := http.NewRequest("GET", f.URL+"/headers", nil)
		req.Host = "app.example"
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		return f.headersSeen(t, req)
	}

	t.Run("untrusted client", func(t *testing.T) {
		// Trusting a network the client is not in is the same as trusting nobody.
		for _, trusted := range [][]netip.Prefix{nil, {netip.MustParsePrefix("10.0.0.0/8")}} {
			f := startFront(t, proxy.Options{Upstream: up, TrustedProxies: trusted}, false)
			h := request(t, f, forged).Header
			if got := h["X-Forwarded-For"]; !equalStrings(got, []string{"127.0.0.1"}) {
				t.Errorf("trusted %v: X-Forwarded-For %q, want only the client's address", trusted, got)
			}
			if got := h.Get("X-Forwarded-Host"); got != "app.example" {
				t.Errorf("trusted %v: X-Forwarded-Host %q, want the Host the client sent", trusted, got)
			}
			if got := h.Get("X-Forwarded-Proto"); got != "http" {
				t.Errorf("trusted %v: X-Forwarded-Proto %q, want http", trusted, got)
			}
			if got, ok := h["Forwarded"]; ok {
				t.Errorf("trusted %v: Forwarded %q passed on from an untrusted client", trusted, got)
			}
			if got := h.Get("X-Request-Id"); !requestIDPattern.MatchString(got) {
				t.Errorf("trusted %v: X-Request-Id %q, want a fresh id in place of the client's", trusted, got)
			}
		}
	})

	t.Run("trusted client", func(t *testing.T) {
		trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		f := startFront(t, proxy.Options{Upstream: up, TrustedProxies: trusted}, false)
		h := request(t, f, forged).Header
		if got := h["X-Forwarded-For"]; !equalStrings(got, []string{"203.0.113.7, 127.0.0.1"}) {
			t.Errorf("X-Forwarded-For %q, want the client's list with our peer appended", got)
		}
		for _, name := range []string{"X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Request-Id"} {
			if got := h.Get(name); got != forged[name] {
				t.Errorf("%s %q, want %q kept from a trusted proxy", name, got, forged[name])
			}
		}

		// A trusted proxy that sends none gets ours.
		h = request(t, f, nil).Header
		if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("without forwarded headers: X-Forwarded-For %q, want 127.0.0.1", got)
		}
		if got := h.Get("X-Forwarded-Host"); got != "app.example" {
			t.Errorf("without forwarded headers: X-Forwarded-Host %q, want app.example", got)
		}
	})

	t.Run("request id generated when absent", func(t *testing.T) {
		for _, trusted := range [][]netip.Prefix{nil, {netip.MustParsePrefix("127.0.0.1/32")}} {
			f := startFront(t, proxy.Options{Upstream: up, TrustedProxies: trusted}, false)
			first := request(t, f, nil).Header.Get("X-Request-Id")
			second := request(t, f, nil).Header.Get("X-Request-Id")
			if !requestIDPattern.MatchString(first) || !requestIDPattern.MatchString(second) || first == second {
				t.Errorf("trusted %v: request ids %q and %q, want two different 32-digit hex ids", trusted, first, second)
			}
		}
	})
}

// hopHeaders are hop-by-hop headers a client or an app may send; none may cross the proxy.
// (TE: trailers is the exception the standard library makes on purpose, for gRPC.)
var hopHeaders = map[string]string{
	"Connection":          "keep-alive, X-Hop-Custom, X-Forwarded-Host, X-Request-Id",
	"X-Hop-Custom":        "named in Connection",
	"Keep-Alive":          "timeout=5",
	"Proxy-Connection":    "keep-alive",
	"Te":                  "gzip",
	"Proxy-Authorization": "Basic c2VjcmV0",
	"Proxy-Authenticate":  "Basic",
	"Upgrade":             "something",
}

func TestHopByHopHeadersStripped(t *testing.T) {
	var upstreamSaw atomic.Pointer[http.Request]
	up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamSaw.Store(r)
		io.Copy(io.Discard, r.Body)
		for k, v := range hopHeaders {
			w.Header().Set(k, v)
		}
		w.Header().Set("X-End-To-End", "kept")
		io.WriteString(w, "ok")
	}))
	for _, trusted := range [][]netip.Prefix{nil, {netip.MustParsePrefix("127.0.0.1/32")}} {
		t.Run(fmt.Sprint("trusted=", trusted != nil), func(t *testing.T) {
			f := startFront(t, proxy.Options{Upstream: up, TrustedProxies: trusted}, true)

			// A raw request, so that exactly these headers are sent, with a chunked body
			// whose framing (Transfer-Encoding) is the hop's too.
			c, err := net.Dial("tcp", f.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			var req strings.Builder
			req.WriteString("POST /hop HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n")
			req.WriteString("X-Forwarded-Host: named.example\r\nX-Request-Id: named-in-connection\r\n")
			for k, v := range hopHeaders {
				if k != "Upgrade" && k != "Proxy-Authenticate" {
					fmt.Fprintf(&req, "%s: %s\r\n", k, v)
				}
			}
			req.WriteString("X-End-To-End: kept\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			if _, err := io.WriteString(c, req.String()); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(waitLimit))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("got %d %q, want 200 ok", resp.StatusCode, body)
			}

			r := upstreamSaw.Load()
			for k := range hopHeaders {
				if v, ok := r.Header[k]; ok {
					t.Errorf("request: hop-by-hop %s: %q reached the upstream", k, v)
				}
			}
			if v, ok := r.Header["Transfer-Encoding"]; ok {
				t.Errorf("request: Transfer-Encoding %q reached the upstream as a header", v)
			}
			if got := r.Header.Get("X-End-To-End"); got != "kept" {
				t.Errorf("request: X-End-To-End %q, want kept", got)
			}
			// Named in Connection by the client, so hop-by-hop, even from a trusted proxy.
			if got := r.Header.Get("X-Forwarded-Host"); got == "named.example" {
				t.Errorf("request: X-Forwarded-Host named in Connection was passed on")
			}
			// The request id is ours to set whatever the client's Connection says.
			if got := r.Header.Get("X-Request-Id"); !requestIDPattern.MatchString(got) {
				t.Errorf("request: X-Request-Id %q, want a generated id", got)
			}

			for k := range hopHeaders {
				if v, ok := resp.Header[k]; ok {
					t.Errorf("response: hop-by-hop %s: %q came back", k, v)
				}
			}
			if got := resp.Header.Get("X-End-To-End"); got != "kept" {
				t.Errorf("response: X-End-To-End %q, want kept", got)
			}
		})
	}
}

func TestHostHeaderPolicy(t *testing.T) {
	up := upstreamURL(t, standin.Handler())
	for _, tc := range []struct {
		policy string
		want   string
	}{
		{"", "app.example"},
		{"client", "app.example"},
		{"upstream", up.Host},
	} {
		t.Run("policy="+tc.policy, func(t *testing.T) {
			f := startFront(t, proxy.Options{Upstream: up, HostHeader: tc.policy}, false)
			req, _ := http.NewRequest("GET", f.URL+"/headers", nil)
			req.Host = "app.example"
			if got := f.headersSeen(t, req).Host; got != tc.want {
				t.Errorf("upstream saw Host %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := proxy.New(proxy.Options{Upstream: up, HostHeader: "server"}); err == nil {
		t.Error(`HostHeader "server" was accepted`)
	}
}

// readWithin reads exactly len(p) bytes from r, failing the test (not hanging it) if they
// do not come. A proxy that buffers a streamed response would leave it waiting.
func readWithin(t testing.TB, r io.Reader, p []byte, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(r, p)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading %s: %v", what, err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("%s did not arrive while the upstream was still sending: the proxy buffers", what)
	}
}

func TestStreamingReachesClientBeforeUpstreamFinishes(t *testing.T) {
	for _, contentType := range []string{"text/plain", "text/event-stream"} {
		t.Run(contentType, func(t *testing.T) {
			bothWays(t, func(t *testing.T, viaDrain bool) {
				more, letMore := release(t)
				first := "data: first\n\n"
				last := "data: last\n\n"
				up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", contentType)
					io.WriteString(w, first)
					http.NewResponseController(w).Flush()
					select {
					case <-more: // the test has read the first event
					case <-r.Context().Done():
						return
					}
					io.WriteString(w, last)
				}))
				f := startFront(t, proxy.Options{Upstream: up}, viaDrain)
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", f.URL+"/events", nil)
				resp, err := f.Client.Do(req)
				if err != nil {
					t.Fatalf("no response while the upstream was still sending (the proxy buffers?): %v", err)
				}
				defer resp.Body.Close()
				if got := resp.Header.Get("Content-Type"); got != contentType {
					t.Errorf("Content-Type %q, want %q", got, contentType)
				}
				buf := make([]byte, len(first))
				readWithin(t, resp.Body, buf, "the first chunk")
				if string(buf) != first {
					t.Fatalf("first chunk %q, want %q", buf, first)
				}
				letMore()
				rest, err := io.ReadAll(resp.Body)
				if err != nil || string(rest) != last {
					t.Fatalf("rest %q (%v), want %q", rest, err, last)
				}
			})
		})
	}
}

func TestWebSocketEcho(t *testing.T) {
	up := upstreamURL(t, standin.Handler())
	bothWays(t, func(t *testing.T, viaDrain bool) {
		f := startFront(t, proxy.Options{Upstream: up}, viaDrain)
		ws, err := websocket.Dial("ws://"+f.Addr+"/ws", "", f.URL+"/")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		ws.SetDeadline(time.Now().Add(waitLimit))
		for i := range 3 {
			msg := fmt.Sprintf("message %d through the proxy", i)
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatal(err)
			}
			if got != msg {
				t.Fatalf("echo %q, want %q", got, msg)
			}
		}
		ws.Close()
		if viaDrain {
			x := f.lastExchange(t)
			if !x.Upgraded || x.Status != http.StatusSwitchingProtocols {
				t.Errorf("drain saw upgraded=%v status=%d, want an upgrade with 101", x.Upgraded, x.Status)
			}
		}
	})
}

func TestUnixSocketUpstream(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: standin.Handler()}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	up := &url.URL{Scheme: "unix", Path: sock}
	f := startFront(t, proxy.Options{Upstream: up, HostHeader: "upstream"}, true)

	resp, body := f.get(t, "/")
	if resp.StatusCode != http.StatusOK || string(body) != standin.Hello {
		t.Fatalf("GET /: %d %q, want 200 %q", resp.StatusCode, body, standin.Hello)
	}
	payload := bytes.Repeat([]byte("x"), 1<<20)
	req, _ := http.NewRequest("POST", f.URL+"/echo", bytes.NewReader(payload))
	if resp, got := f.do(t, req); resp.StatusCode != http.StatusOK || !bytes.Equal(got, payload) {
		t.Fatalf("POST /echo: %d with %d bytes, want 200 with %d", resp.StatusCode, len(got), len(payload))
	}
	req, _ = http.NewRequest("GET", f.URL+"/headers", nil)
	if got := f.headersSeen(t, req).Host; got != "localhost" {
		t.Errorf("host policy upstream over a socket: Host %q, want localhost", got)
	}

	// A socket path with nothing behind it is "refused", like a closed port.
	gone := startFront(t, proxy.Options{Upstream: &url.URL{Scheme: "unix", Path: sock + ".missing"}}, true)
	if resp, body := gone.get(t, "/"); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("missing socket: %d %q, want 502", resp.StatusCode, body)
	}
	if x := gone.lastExchange(t); x.UpstreamError != proxy.ReasonRefused {
		t.Errorf("missing socket: reason %q, want %q", x.UpstreamError, proxy.ReasonRefused)
	}
}

// checkErrorAnswer checks a proxy-made error answer: status, plain text, and a body that
// says what went wrong.
func checkErrorAnswer(t testing.TB, resp *http.Response, body []byte, status int, says string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d %q, want %d", resp.StatusCode, body, status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if !strings.Contains(string(body), says) {
		t.Errorf("body %q does not say %q", body, says)
	}
}

func checkReason(t testing.TB, f *front, reason string, status int) {
	t.Helper()
	if f.Seen == nil {
		return
	}
	x := f.lastExchange(t)
	if x.UpstreamError != reason || x.Status != status {
		t.Errorf("drain saw reason %q status %d (err %v), want %q %d", x.UpstreamError, x.Status, x.Err, reason, status)
	}
}

func TestUpstreamDownAnswers502AndLogs(t *testing.T) {
	bothWays(t, func(t *testing.T, viaDrain bool) {
		addr := closedAddr(t)
		log, logged := captureLog(t)
		f := startFront(t, proxy.Options{Upstream: &url.URL{Scheme: "http", Host: addr}, Logger: log}, viaDrain)
		resp, body := f.get(t, "/anything")
		checkErrorAnswer(t, resp, body, http.StatusBadGateway, "refused")
		checkReason(t, f, proxy.ReasonRefused, http.StatusBadGateway)
		line := logged.String()
		for _, want := range []string{"upstream request failed", "upstream=http://" + addr, "reason=refused", "path=/anything"} {
			if !strings.Contains(line, want) {
				t.Errorf("log %q lacks %q", line, want)
			}
		}
	})
}

func TestSlowUpstreamAnswers504(t *testing.T) {
	bothWays(t, func(t *testing.T, viaDrain bool) {
		never, _ := release(t)
		up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-never:
			case <-r.Context().Done():
			}
		}))
		log, logged := captureLog(t)
		f := startFront(t, proxy.Options{Upstream: up, ResponseHeaderTimeout: 50 * time.Millisecond, Logger: log}, viaDrain)
		resp, body := f.get(t, "/")
		checkErrorAnswer(t, resp, body, http.StatusGatewayTimeout, "did not answer in time")
		checkReason(t, f, proxy.ReasonTimeout, http.StatusGatewayTimeout)
		if !strings.Contains(logged.String(), "reason=timeout") {
			t.Errorf("log %q lacks reason=timeout", logged.String())
		}
	})
}

func TestBodyOverLimitAnswers413(t *testing.T) {
	const limit = 64 << 10 // above the transport's 4 KiB write buffer, so the upstream sees a start
	body := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)

	bothWays(t, func(t *testing.T, viaDrain bool) {
		var calls atomic.Int64
		received := make(chan int, 8)
		up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			n, _ := io.Copy(io.Discard, r.Body)
			received <- int(n)
			fmt.Fprintf(w, "read %d", n)
		}))
		f := startFront(t, proxy.Options{Upstream: up, MaxRequestBodyBytes: limit}, viaDrain)

		t.Run("length known", func(t *testing.T) {
			req, _ := http.NewRequest("POST", f.URL+"/upload", bytes.NewReader(body[:limit+1]))
			resp, got := f.do(t, req)
			checkErrorAnswer(t, resp, got, http.StatusRequestEntityTooLarge, "over the limit")
			checkReason(t, f, proxy.ReasonBodyTooLarge, http.StatusRequestEntityTooLarge)
			if !resp.Close {
				t.Error("a 413 must close the connection: the rest of the body is not read")
			}
			if n := calls.Load(); n != 0 {
				t.Errorf("the upstream was called %d times for a body known to be too large", n)
			}
		})

		t.Run("chunked", func(t *testing.T) {
			calls.Store(0)
			req, _ := http.NewRequest("POST", f.URL+"/upload", struct{ io.Reader }{bytes.NewReader(body)})
			resp, got := f.do(t, req)
			checkErrorAnswer(t, resp, got, http.StatusRequestEntityTooLarge, "over the limit")
			checkReason(t, f, proxy.ReasonBodyTooLarge, http.StatusRequestEntityTooLarge)
			if !resp.Close {
				t.Error("a 413 must close the connection: the rest of the body is not read")
			}
			select {
			case n := <-received:
				if n > limit {
					t.Errorf("the upstream received %d bytes, over the %d limit", n, limit)
				}
			case <-time.After(waitLimit):
				t.Fatal("the upstream never saw the request start")
			}
		})

		t.Run("chunked, just over", func(t *testing.T) {
			// The rest of the body is short enough for the server to read it after the
			// answer: the connection must close all the same (MaxBytesReader tells
			// net/http's server so; package h1serve's hears it from the header).
			req, _ := http.NewRequest("POST", f.URL+"/upload", struct{ io.Reader }{bytes.NewReader(body[:limit+100])})
			resp, got := f.do(t, req)
			checkErrorAnswer(t, resp, got, http.StatusRequestEntityTooLarge, "over the limit")
			if !resp.Close {
				t.Error("a 413 must close the connection: the rest of the body is not read")
			}
			<-received
		})

		t.Run("at the limit", func(t *testing.T) {
			req, _ := http.NewRequest("POST", f.URL+"/upload", struct{ io.Reader }{bytes.NewReader(body[:limit])})
			resp, got := f.do(t, req)
			if resp.StatusCode != http.StatusOK || string(got) != fmt.Sprintf("read %d", limit) {
				t.Errorf("a body of exactly the limit: %d %q, want 200 read %d", resp.StatusCode, got, limit)
			}
			<-received
		})
	})
}

// hijackAnd serves requests by taking the connection over and doing fn to it.
func hijackAnd(t testing.TB, fn func(c net.Conn, brw *bufio.ReadWriter)) *url.URL {
	return upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		fn(c, brw)
	}))
}

func TestUpstreamResetAnswers502(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(c net.Conn, brw *bufio.ReadWriter)
	}{
		{"closes without answering", func(net.Conn, *bufio.ReadWriter) {}},
		{"resets", func(c net.Conn, _ *bufio.ReadWriter) { c.(*net.TCPConn).SetLinger(0) }},
		{"closes inside the headers", func(c net.Conn, brw *bufio.ReadWriter) {
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/pl")
			brw.Flush()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := hijackAnd(t, tc.fn)
			bothWays(t, func(t *testing.T, viaDrain bool) {
				log, logged := captureLog(t)
				f := startFront(t, proxy.Options{Upstream: up, Logger: log}, viaDrain)
				resp, body := f.get(t, "/")
				checkErrorAnswer(t, resp, body, http.StatusBadGateway, "closed the connection")
				checkReason(t, f, proxy.ReasonReset, http.StatusBadGateway)
				if !strings.Contains(logged.String(), "reason=reset") {
					t.Errorf("log %q lacks reason=reset", logged.String())
				}
			})
		})
	}

	// Once the status line is out, the client cannot get a 502; it must see the
	// response break off, never a short body that looks complete.
	t.Run("closes inside the body", func(t *testing.T) {
		up := hijackAnd(t, func(c net.Conn, brw *bufio.ReadWriter) {
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
			brw.Flush()
		})
		bothWays(t, func(t *testing.T, viaDrain bool) {
			f := startFront(t, proxy.Options{Upstream: up}, viaDrain)
			// The proxy may not have flushed the headers when the copy breaks, so the
			// failure shows either on the request or on reading the body.
			resp, err := f.Client.Get(f.URL + "/")
			if err != nil {
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Errorf("got %d %q and a clean end of a truncated response", resp.StatusCode, got)
			}
		})
	})
}

func TestClientGoneCancelsUpstreamRequest(t *testing.T) {
	bothWays(t, func(t *testing.T, viaDrain bool) {
		entered := make(chan struct{}, 1)
		canceled := make(chan struct{}, 1)
		never, _ := release(t)
		up := upstreamURL(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			select {
			case <-r.Context().Done():
				canceled <- struct{}{}
			case <-never:
			}
		}))
		log, _ := captureLog(t)
		f := startFront(t, proxy.Options{Upstream: up, Logger: log}, viaDrain)
		before := runtime.NumGoroutine()

		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", f.URL+"/", nil)
			resp, err := f.Client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		select {
		case <-entered:
		case <-time.After(waitLimit):
			t.Fatal("the request never reached the upstream")
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("client: %v, want context.Canceled", err)
		}
		select {
		case <-canceled:
		case <-time.After(waitLimit):
			t.Fatal("the upstream request's context was not canceled when the client left")
		}
		checkReason(t, f, proxy.ReasonClientCanceled, proxy.StatusClientClosedRequest)

		f.Client.CloseIdleConnections()
		f.Proxy.CloseIdleConnections()
		waitGoroutines(t, before)
	})
}

// waitGoroutines waits, boundedly, for the goroutine count to settle back to at most want,
// and fails with every goroutine's stack if it does not.
func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	n := 0
	for range 500 {
		if n = runtime.NumGoroutine(); n <= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	var stacks strings.Builder
	pprof.Lookup("goroutine").WriteTo(&stacks, 1)
	t.Fatalf("%d goroutines, want at most %d as before the request:\n%s", n, want, stacks.String())
}

func TestUpstreamConnectionsAreReused(t *testing.T) {
	bothWays(t, func(t *testing.T, viaDrain bool) {
		var dialed atomic.Int64
		upAddr := serveOn(t, standin.Handler(), func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				dialed.Add(1)
			}
		})
		f := startFront(t, proxy.Options{Upstream: &url.URL{Scheme: "http", Host: upAddr}}, viaDrain)

		t.Run("sequential", func(t *testing.T) {
			dialed.Store(0)
			for range 50 {
				if resp, body := f.get(t, "/"); resp.StatusCode != http.StatusOK || string(body) != standin.Hello {
					t.Fatalf("GET /: %d %q", resp.StatusCode, body)
				}
			}
			if n := dialed.Load(); n > 2 {
				t.Errorf("50 sequential requests opened %d upstream connections, want at most 2", n)
			}
		})

		// Go's default pool keeps 2 idle connections per host; concurrent rounds would
		// then dial most of their connections afresh every round.
		t.Run("concurrent", func(t *testing.T) {
			const concurrency, rounds = 16, 20
			dialed.Store(0)
			for range rounds {
				var wg sync.WaitGroup
				errs := make(chan error, concurrency)
				for range concurrency {
					wg.Go(func() {
						resp, err := f.Client.Get(f.URL + "/")
						if err != nil {
							errs <- err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							errs <- fmt.Errorf("status %d", resp.StatusCode)
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
			}
			if n := dialed.Load(); n > 2*concurrency {
				t.Errorf("%d rounds of %d concurrent requests opened %d upstream connections, want at most %d",
					rounds, concurrency, n, 2*concurrency)
			}
		})
	})
}
