package h2serve

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"

	"github.com/drainproxy/drainproxy/h1serve"
)

// ConfigureH1 makes the h1serve Server srv hand its HTTP/2 connections to s, as
// Configure does for a net/http Server: those that negotiate "h2" by ALPN, and, with
// cleartext, those that open with the HTTP/2 preface (h2c with prior knowledge). Each is
// served with srv's handler, timeouts, header limit and error log, and its requests'
// contexts descend from the connection's (srv's BaseContext and ConnContext). Call
// before srv serves.
func (s *Server) ConfigureH1(srv *h1serve.Server, cleartext bool) {
	srv.H2C = cleartext
	srv.ServeHTTP2 = func(ctx context.Context, c net.Conn, tc *tls.Conn) {
		hs := &http.Server{
			Handler: srv.Handler, ReadTimeout: srv.ReadTimeout, WriteTimeout: srv.WriteTimeout,
			IdleTimeout: srv.IdleTimeout, MaxHeaderBytes: srv.MaxHeaderBytes, ErrorLog: srv.ErrorLog,
		}
		h := connContextHandler{Handler: srv.Handler, ctx: ctx}
		if tc != nil {
			s.serve(hs, tlsConnOf(tc), tc, h, false)
			return
		}
		s.serve(hs, c, nil, h, true)
	}
}

// connContextHandler carries the connection's context to serve, which takes it from a
// handler's BaseContext as net/http hands it over.
type connContextHandler struct {
	http.Handler
	ctx context.Context
}

func (h connContextHandler) BaseContext() context.Context { return h.ctx }
