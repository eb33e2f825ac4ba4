package proxy

import (
	"net"
	"testing"
	"time"
)

// BenchmarkIdleConnQuiet is the check an idle pooled connection passes before reuse: one
// non-blocking MSG_PEEK on a loopback socket.
func BenchmarkIdleConnQuiet(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if peer := <-accepted; peer != nil {
		defer peer.Close()
	}
	uc := newUpConn(c)
	b.ReportAllocs()
	for b.Loop() {
		if uc.check() != idleQuiet {
			b.Fatal("an idle connection is not quiet")
		}
	}
}

// BenchmarkIdlePoolCycle is what the pool costs a request that reuses a connection: give
// it back, take it (with the check at hand-out). Back-to-back, as under load: the idle
// watch never starts, and this measures what it adds to that path.
func BenchmarkIdlePoolCycle(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if peer := <-accepted; peer != nil {
		defer peer.Close()
	}
	t := &inlineTransport{guard: &strayGuard{counts: &ProtocolErrors{}}}
	t.pool.max, t.pool.timeout, t.pool.guard = 8, time.Minute, t.guard
	defer t.pool.closeIdle(true)
	uc := newUpConn(c)
	b.ReportAllocs()
	for b.Loop() {
		if !t.pool.give(uc) || t.takeIdle() != uc {
			b.Fatal("the connection did not come back")
		}
	}
}

// BenchmarkReusableHead is the framing check of a typical response head.
func BenchmarkReusableHead(b *testing.B) {
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 1234\r\n" +
		"Date: Wed, 02 Dec 2026 15:00:00 GMT\r\nCache-Control: no-cache\r\nX-Request-Id: 0123456789abcdef\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if ok, why := reusableHead(head, "GET"); !ok {
			b.Fatal(why)
		}
	}
}
