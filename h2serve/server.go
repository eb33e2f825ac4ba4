// Package h2serve serves HTTP/2 on drainproxy's public listeners, h2 negotiated by TLS
// ALPN and h2c (prior knowledge) on plain-HTTP ones, through golang.org/x/net/http2, and
// drains HTTP/2 connections the graceful two-step way of RFC 9113, section 6.8.
//
// Go's HTTP/2 server (x/net/http2, and the copy bundled in net/http) has one graceful
// shutdown, run by http.Server.Shutdown: a single GOAWAY carrying the last stream id it
// has processed. A stream the client opened while that GOAWAY was on its way is then
// discarded, and after the last stream ends the server waits up to a second for the
// client to hang up. Shutdown also closes idle HTTP/1 keep-alive connections at once,
// which package drain avoids. So each HTTP/2 connection here is served by an
// http2.Server of its own (on an http.Server of its own that owns nothing else), through
// a conn that follows the frames in both directions, and Drain does, per connection:
//
//  1. GOAWAY with the largest stream id (2^31-1) and a PING, written between two of the
//     server's frames: the client opens no new stream, and nothing it sent is refused;
//  2. when the PING's ack arrives (so the client has seen the GOAWAY, and every stream it
//     opened before has been read), that connection's own Shutdown: x/net/http2's GOAWAY
//     with the real last stream id; the streams in flight finish;
//  3. once that GOAWAY went out and no stream is left, the connection is closed at once,
//     without waiting a round trip for the client to close it.
//
// Connections that arrive during the drain delay get the same once the listeners stop
// accepting (see Drain). HTTP/1 connections are not touched: they get "Connection:
// close" from package drain.
package h2serve

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2"

	"github.com/drainproxy/drainproxy/listener"
)

// nextProtoUnencryptedHTTP2 is the TLSNextProto key under which net/http (Go 1.24 and
// later) hands over a plain connection that began with the HTTP/2 client preface, when
// http.Server.Protocols allows unencrypted HTTP/2. The preface has been read.
const nextProtoUnencryptedHTTP2 = "unencrypted_http2"

// Options configures a Server. Every zero value is usable.
type Options struct {
	// PingTimeout bounds the wait for the ack of the PING that follows the first GOAWAY;
	// without it the connection moves on to the final GOAWAY anyway (zero: 1s).
	PingTimeout time.Duration
	// MaxConcurrentStreams is the per-connection stream limit announced to clients
	// (zero: DefaultMaxConcurrentStreams). x/net/http2's own default is 250; most servers
	// announce 100, and each stream may hold an upstream request.
	MaxConcurrentStreams uint32
	// Logger receives failures to set a connection up (zero: discard).
	Logger hclog.Logger
}

// DefaultMaxConcurrentStreams is Options.MaxConcurrentStreams's default, what nginx,
// Envoy's recommended edge settings and most servers announce.
const DefaultMaxConcurrentStreams = 100

// Server is the HTTP/2 side of every public listener.
type Server struct {
	opts Options
	log  hclog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool // Drain was called
	stopping bool // StopAccepting was called

	closedEarly atomic.Int64 // connections closed by us once their last stream ended
}

// New returns a Server that serves no connection until Configure hands it some.
func New(opts Options) *Server {
	if opts.PingTimeout <= 0 {
		opts.PingTimeout = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	return &Server{opts: opts, log: opts.Logger, conns: make(map[*conn]struct{})}
}

// Configure makes srv hand its HTTP/2 connections to s: those that negotiate "h2" by
// ALPN (a TLS listener), and, with cleartext, those that open with the HTTP/2 preface on
// a plain listener (h2c with prior knowledge), beside HTTP/1.1. The upgrade from
// HTTP/1.1 (Upgrade: h2c) is not offered: gRPC and other HTTP/2 clients use prior
// knowledge, and net/http does not support the upgrade either. Call before srv serves.
func (s *Server) Configure(srv *http.Server, cleartext bool) {
	if srv.TLSNextProto == nil {
		srv.TLSNextProto = make(map[string]func(*http.Server, *tls.Conn, http.Handler))
	}
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		s.serve(hs, tlsConnOf(tc), tc, h, false)
	}
	if !cleartext {
		return
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Protocols = &protos
	srv.TLSNextProto[nextProtoUnencryptedHTTP2] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
		nc, ok := tc.NetConn().(interface{ UnencryptedNetConn() net.Conn })
		if !ok {
			s.log.Error("h2c: net/http handed over a connection that is not unencrypted; closing it")
			tc.Close()
			return
		}
		s.serve(hs, nc.UnencryptedNetConn(), nil, h, true)
	}
}

// tlsConnOf is tc itself: the connection x/net/http2 reads and writes.
func tlsConnOf(tc *tls.Conn) net.Conn { return tc }

// serve runs one HTTP/2 connection until it ends.
func (s *Server) serve(hs *http.Server, nc net.Conn, tc *tls.Conn, h http.Handler, sawPreface bool) {
	c := newConn(nc, s, sawPreface)
	// max_connections counts it idle while no stream is open, and may reclaim it then.
	c.onIdle = listener.AttachMultiplexed(nc, c)
	var served net.Conn = c
	if tc != nil {
		served = tlsConn{conn: c, tc: tc}
	}
	// An http.Server of its own, which owns no listener and no HTTP/1 connection: its
	// Shutdown only runs http2's hook, the graceful shutdown of this one connection.
	base := &http.Server{
		Handler: hs.Handler, ReadTimeout: hs.ReadTimeout, WriteTimeout: hs.WriteTimeout,
		IdleTimeout: hs.IdleTimeout, MaxHeaderBytes: hs.MaxHeaderBytes, ErrorLog: hs.ErrorLog,
	}
	//lint:ignore SA1019 net/http (go1.26) cannot serve one connection on an http.Server of its own; see the package comment
	h2 := &http2.Server{MaxConcurrentStreams: s.opts.MaxConcurrentStreams}
	//lint:ignore SA1019 net/http (go1.26) cannot serve one connection on an http.Server of its own; see the package comment
	if err := http2.ConfigureServer(base, h2); err != nil {
		s.log.Error("cannot serve HTTP/2", "client", nc.RemoteAddr().String(), "error", err.Error())
		nc.Close()
		return
	}
	c.shutdown = func() {
		if err := base.Shutdown(context.Background()); err != nil {
			s.log.Debug("HTTP/2 GOAWAY", "client", nc.RemoteAddr().String(), "error", err.Error())
		}
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	stopping := s.stopping
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	if stopping {
		// Taken from the accept queue of a listener that is closing: its first streams
		// are served, and it is told to go away at once.
		go c.announce()
	}
	ctx := context.Background()
	// net/http passes the connection's context this way (x/net/http2's ConfigureServer
	// does the same).
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		ctx = bc.BaseContext()
	}
	//lint:ignore SA1019 net/http (go1.26) cannot serve one connection on an http.Server of its own; see the package comment
	h2.ServeConn(served, &http2.ServeConnOpts{
		Context: ctx, BaseConfig: base, Handler: h, SawClientPreface: sawPreface,
	})
}

// Drain starts the two-step GOAWAY on every HTTP/2 connection open now: call it at the
// start of the drain. It returns at once; each connection ends once its streams are done
// (or when the drain's deadline closes it with the rest).
//
// Connections that arrive later, while the drain delay still serves, are served until
// StopAccepting: a client told to go away reconnects at once, to the same address when
// it has only one, and a connection told to go away as soon as it opens would only make
// it reconnect again, over and over, for as long as the delay lasts.
func (s *Server) Drain() {
	s.mu.Lock()
	s.draining = true
	conns := s.snapshotLocked()
	s.mu.Unlock()
	for _, c := range conns {
		go c.announce()
	}
}

// StopAccepting starts the two-step GOAWAY on every HTTP/2 connection that has not had
// it, and on every one that arrives from now on (from the accept queue of a closing
// listener): call it when the listeners stop accepting.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	s.draining, s.stopping = true, true
	conns := s.snapshotLocked()
	s.mu.Unlock()
	for _, c := range conns {
		go c.announce()
	}
}

func (s *Server) snapshotLocked() []*conn {
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// afterAnnounce moves c on to the final GOAWAY if its client does not ack the PING in time.
func (s *Server) afterAnnounce(c *conn) {
	time.AfterFunc(s.opts.PingTimeout, c.final)
}

// Conns is how many HTTP/2 connections are open now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// ClosedEarly is how many HTTP/2 connections were closed by us as soon as their last
// stream ended after the final GOAWAY.
func (s *Server) ClosedEarly() int64 { return s.closedEarly.Load() }
