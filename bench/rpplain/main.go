// Command rpplain is a reference point for bench/run and bench/rate, not a proxy to deploy:
// the standard library's httputil.ReverseProxy on a net/http Server, with an upstream
// keep-alive pool as large as drainproxy's and nothing else (no timeouts, no drain, no
// access log, no header trust). drainproxy / rp-plain is what drainproxy's own layers cost
// on top of the library it is built on.
//
// With -server h1serve (bench/run's rp-h1serve target) the same ReverseProxy is served by
// h1serve, drainproxy's own HTTP/1 connection loop, instead of net/http's Server:
// rp-h1serve / rp-plain is what the loop saves.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/drainproxy/drainproxy/h1serve"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to accept clients on")
	upstream := flag.String("upstream", "http://127.0.0.1:3000", "URL requests are proxied to")
	idle := flag.Int("idle-conns", 1024, "upstream keep-alive pool size (drainproxy's upstream.idle_conns default)")
	server := flag.String("server", "net/http", "HTTP/1 server loop: net/http or h1serve")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		log.Fatalf("rpplain: -upstream must be an http:// URL, not %q", *upstream)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = *idle, *idle
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u); r.SetXForwarded() },
		Transport: tr,
	}
	switch *server {
	case "net/http":
		log.Fatal(http.ListenAndServe(*listen, rp))
	case "h1serve":
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Fatal(err)
		}
		log.Fatal((&h1serve.Server{Handler: rp}).Serve(ln))
	default:
		log.Fatalf("rpplain: -server must be net/http or h1serve, not %q", *server)
	}
}
