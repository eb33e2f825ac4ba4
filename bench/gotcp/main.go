// Command gotcp is a reference point for bench/run, not a proxy to deploy: it copies bytes
// between each client connection and an upstream connection of its own, with no HTTP
// parsing, no pooling and no timeouts. What it spends per request is what the Go runtime
// and the loopback sockets cost on the machine, the least any Go proxy can spend there.
package main

import (
	"flag"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to accept clients on")
	upstream := flag.String("upstream", "127.0.0.1:3000", "host:port each client is forwarded to")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go forward(c, *upstream)
	}
}

// forward pairs client c with a new upstream connection until either side closes.
func forward(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		log.Print(err)
		return
	}
	defer u.Close()
	go func() {
		pump(u, c)
		u.Close()
	}()
	pump(c, u)
}

// pump copies src to dst with one read and one write per chunk, as an HTTP proxy does. Not
// io.Copy, which splices through a pipe between two TCP connections.
func pump(dst, src net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
