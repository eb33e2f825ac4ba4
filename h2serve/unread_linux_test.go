package h2serve

import (
	"net"
	"testing"
	"time"
)

// The unread-bytes check reaches the socket through TLS and through wrappers that embed
// the connection, as x/net/netutil's LimitListener does.
func TestSocketOfWrappedConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()
	type wrapper struct{ net.Conn }
	w := &wrapper{Conn: server}
	if _, ok := socketOf(w); !ok {
		t.Fatal("socketOf did not find the socket under a wrapper")
	}
	client.Write([]byte("12345"))
	for unreadBytes(w) != 5 {
		time.Sleep(time.Millisecond) // the bytes cross loopback
	}
}
