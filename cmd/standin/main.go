// Command standin is a plain HTTP app to try drainproxy with: it knows nothing about
// graceful shutdown and dies at once on SIGTERM, like the legacy apps drainproxy fronts.
//
//	standin [-listen 127.0.0.1:3000]   (or the PORT environment variable)
//	standin -probe URL                 exit 0 if URL answers 2xx, else 1: the container
//	                                   image's health check (a scratch image has no curl)
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

func main() {
	addr := "127.0.0.1:3000"
	if p := os.Getenv("PORT"); p != "" {
		addr = net.JoinHostPort("127.0.0.1", p)
	}
	flag.StringVar(&addr, "listen", addr, "address to serve on (unix:/path for a unix socket)")
	probeURL := flag.String("probe", "", "GET this URL and exit 0 on a 2xx answer, 1 otherwise")
	flag.Parse()
	if *probeURL != "" {
		os.Exit(probe(*probeURL))
	}
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
	dieOnSignals()
	srv := &http.Server{Handler: standin.Handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, srv.Serve(ln))
	os.Exit(1)
}

// dieOnSignals makes SIGTERM and SIGINT end the process at once, as they end a legacy app
// that never heard of them: killed by the signal. As PID 1 of a container, where the
// kernel ignores a signal whose action is the default, it exits with the code a shell
// reports for such a death (143, 130) instead: Go's own handling exited 2 there, which
// reads as a usage error.
func dieOnSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := (<-ch).(syscall.Signal)
		if os.Getpid() == 1 {
			os.Exit(128 + int(sig))
		}
		signal.Reset(sig)
		syscall.Kill(os.Getpid(), sig) // Go's default: killed by the signal
	}()
}

func probe(url string) int {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "standin: probe: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "standin: probe %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}
