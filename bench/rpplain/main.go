// Command rpplain is a reference point for bench/run and bench/rate, not a proxy to deploy:
// the standard library's httputil.ReverseProxy on a net/http Server, with an upstream
// keep-alive pool as large as drainproxy's and nothing else (no timeouts, no drain, no
// access log, no header trust). drainproxy / rp-plain is what drainproxy's own layers cost
// on top of the library it is built on.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to accept clients on")
	upstream := flag.String("upstream", "http://127.0.0.1:3000", "URL requests are proxied to")
	idle := flag.Int("idle-conns", 1024, "upstream keep-alive pool size (drainproxy's upstream.idle_conns default)")
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
	log.Fatal(http.ListenAndServe(*listen, rp))
}
