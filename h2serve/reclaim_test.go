package h2serve

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/drainproxy/drainproxy/listener"
)

// Issue 23, item 4: with max_connections full of HTTP/2 connections, the one with no
// stream open for longest gets a GOAWAY and is closed when a new client waits, as an idle
// HTTP/1 keep-alive connection is; one with a stream in progress is not. Plain (h2c) and
// TLS (h2 by ALPN).
func TestFullListenerReclaimsIdleHTTP2(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "h2c", true: "tls"}[useTLS], func(t *testing.T) {
			const maxConns = 3
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ln, err := listener.Listen(ctx, "127.0.0.1:0", maxConns)
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/slow" {
						w.WriteHeader(200)
						http.NewResponseController(w).Flush()
						<-release
					}
					io.WriteString(w, "ok")
				}),
				IdleTimeout: 10 * time.Minute, // only making room frees a slot
				ConnState:   ln.ConnState,
			}
			s := New(Options{})
			s.Configure(srv, !useTLS)
			var cert tls.Certificate
			if useTLS {
				ts := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate
				cert = ts.TLS.Certificates[0]
				ts.Close()
				srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
			}
			served := make(chan error, 1)
			go func() {
				if useTLS {
					served <- srv.ServeTLS(ln, "", "")
				} else {
					served <- srv.Serve(ln)
				}
			}()
			t.Cleanup(func() {
				unblock()
				srv.Close()
				if err := <-served; !errors.Is(err, http.ErrServerClosed) {
					t.Errorf("Serve: %v", err)
				}
			})
			addr := ln.Addr().String()
			dial := func() net.Conn {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if useTLS {
					tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
					c.SetDeadline(time.Now().Add(10 * time.Second)) // a full listener does not accept
					if err := tc.Handshake(); err != nil {
						t.Fatal(err)
					}
					c.SetDeadline(time.Time{})
					return tc
				}
				return c
			}

			// The oldest: the preface and SETTINGS only, then nothing (issue 23's 10,000).
			oldest := dialRawConn(t, dial())
			oldest.next("SETTINGS", func(f http2.Frame) bool { _, ok := f.(*http2.SettingsFrame); return ok })
			time.Sleep(20 * time.Millisecond)
			// A newer idle one, which served a request.
			newer := dialRawConn(t, dial())
			newer.get(1, "/a")
			newer.next("the response", endsStream(1))
			// A busy one: a stream in progress.
			busy := dialRawConn(t, dial())
			busy.get(1, "/slow")
			busy.next("the response headers", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })

			// Full. A new client is served long before any idle timeout.
			fresh := dialRawConn(t, dial())
			fresh.get(1, "/new")
			fresh.next("the new client's response", endsStream(1))

			// The oldest idle one got a GOAWAY, then was closed; the others were not.
			oldest.next("GOAWAY on the oldest idle connection", isGoAway)
			oldest.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := oldest.fr.ReadFrame(); err == nil {
				t.Error("the reclaimed connection stays open after its GOAWAY")
			}
			if got := ln.Reclaimed(); got != 1 {
				t.Errorf("Reclaimed = %d, want 1", got)
			}
			unblock()
			busy.next("the busy stream's end", endsStream(1))
			newer.get(3, "/b")
			newer.next("the newer idle connection's next response", endsStream(3))
		})
	}
}

// dialRawConn is dialRaw over a connection the test made (TLS or not).
func dialRawConn(t *testing.T, c net.Conn) *rawClient {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.henc = hpack.NewEncoder(&rc.hbuf)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}
