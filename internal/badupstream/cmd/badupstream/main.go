// Command badupstream serves the malicious test upstream of package badupstream, to point
// a drainproxy at by hand:
//
//	go run ./internal/badupstream/cmd/badupstream -listen 127.0.0.1:3000
//	drainproxy -upstream http://127.0.0.1:3000
//	curl -H 'X-Nonce: a1' http://127.0.0.1:8080/late-second-response
//
// The path chooses the case; -list prints them. Every byte sent for a request carries
// "nonce:" and its X-Nonce header: a client that sees another nonce got someone else's
// bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/drainproxy/drainproxy/internal/badupstream"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3000", "address to serve on")
	coalesce := flag.Bool("coalesce", false, "send each answer in one write")
	list := flag.Bool("list", false, "print the cases and exit")
	flag.Parse()
	if *list {
		for _, c := range badupstream.Cases() {
			fmt.Printf("/%s\twant %d\n", c.Name, c.Want)
		}
		return
	}
	s, err := badupstream.StartOn(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s.Coalesce = *coalesce
	fmt.Fprintf(os.Stderr, "badupstream: serving %d cases on %s\n", len(badupstream.Cases()), s.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Close()
}
