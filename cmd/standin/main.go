// Command standin is a plain HTTP app to try drainproxy with: it knows nothing about
// graceful shutdown and dies at once on SIGTERM, like the legacy apps drainproxy fronts.
//
//	standin [-listen 127.0.0.1:3000]   (or the PORT environment variable)
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

func main() {
	addr := "127.0.0.1:3000"
	if p := os.Getenv("PORT"); p != "" {
		addr = net.JoinHostPort("127.0.0.1", p)
	}
	flag.StringVar(&addr, "listen", addr, "address to serve on (unix:/path for a unix socket)")
	flag.Parse()
	network, address := "tcp", addr
	if len(addr) > 5 && addr[:5] == "unix:" {
		network, address = "unix", addr[5:]
		os.Remove(address)
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "standin: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "standin: serving on %s\n", ln.Addr())
	srv := &http.Server{Handler: standin.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, srv.Serve(ln))
	os.Exit(1)
}
