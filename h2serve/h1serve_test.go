package h2serve

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/drainproxy/drainproxy/h1serve"
)

type ctxKey struct{}

// h1Server serves h on 127.0.0.1 with an h1serve.Server that hands HTTP/2 to s
// (ConfigureH1), over TLS when cert is set, and returns its address.
func h1Server(t *testing.T, s *Server, h http.Handler, cert *tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h1serve.Server{Handler: h, ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, ctxKey{}, "from ConnContext")
	}}
	s.ConfigureH1(srv, cert == nil)
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}})
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h2c with prior knowledge through h1serve: the preface and the client's first frames
// arrive in one read, so the frames after the preface must be replayed to HTTP/2; the
// stream sees the connection's context; and the drain's GOAWAY reaches the connection.
func TestConfigureH1H2C(t *testing.T) {
	s := New(Options{})
	got := make(chan any, 1)
	addr := h1Server(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Context().Value(ctxKey{})
		io.WriteString(w, "over "+r.Proto)
	}), nil)
	rc := dialRaw(t, addr) // preface and SETTINGS written back to back
	rc.get(1, "/")
	rc.next("the answer", endsStream(1))
	if v := <-got; v != "from ConnContext" {
		t.Errorf("the stream's context holds %v, want the connection's value", v)
	}
	s.Drain()
	rc.next("the GOAWAY of the drain", isGoAway)
}

// TLS with ALPN h2 through h1serve: the connection goes to HTTP/2, requests see the TLS
// state; a client that offers only http/1.1 stays on h1serve.
func TestConfigureH1TLS(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil) // only for its test certificate
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	ts.Close()
	s := New(Options{})
	addr := h1Server(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "no TLS state", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, r.Proto)
	}), &cert)
	transport := func(h2 bool) *http.Transport {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(!h2)
		tr.Protocols.SetHTTP2(h2)
		return tr
	}
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
		want string
	}{
		{"h2", transport(true), "HTTP/2.0"},
		{"http/1.1", transport(false), "HTTP/1.1"},
	} {
		resp, err := (&http.Client{Transport: tc.rt}).Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != tc.want {
			t.Errorf("%s: %d %q, want 200 %q", tc.name, resp.StatusCode, b, tc.want)
		}
	}
	if s.Conns() > 1 {
		t.Errorf("%d HTTP/2 connections open, want at most the h2 client's", s.Conns())
	}
}
