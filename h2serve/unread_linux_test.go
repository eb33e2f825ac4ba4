package h2serve

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/listener"
)

// The unread-bytes check reaches the socket of a connection as the server sees it: here
// one accepted by a listener with max_connections, which wraps every connection.
func TestSocketOfLimitedConn(t *testing.T) {
	ln, err := listener.Listen(context.Background(), "127.0.0.1:0", 10)
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
	if server == nil {
		t.Fatal("accept failed")
	}
	defer server.Close()
	if _, ok := server.(*net.TCPConn); ok {
		t.Fatal("max_connections accepted a bare *net.TCPConn: this test no longer covers a wrapper")
	}
	if _, ok := socketOf(server); !ok {
		t.Fatal("socketOf did not find the socket under max_connections' wrapper")
	}
	client.Write([]byte("12345"))
	for unreadBytes(server) != 5 {
		time.Sleep(time.Millisecond) // the bytes cross loopback
	}
}
