package listener

import (
	"context"
	"net"
	"testing"
	"time"
)

// After an upgrade two processes hold the same socket. The one that drains must only
// close its own descriptor: a SYN filter would land on the shared socket and refuse the
// other one's new clients. Here a second descriptor of one socket stands for the new
// process: after StopAccepting on the handed-over listener, it still accepts new
// connections.
func TestHandedOverStopAcceptingLeavesTheSocketToTheOtherHolder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tcp, err := Bind(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := secondDescriptor(t, tcp)

	old := FromTCP(tcp, 0)
	old.HandOver()
	if left, err := old.StopAccepting(ctx); err != nil || left != 0 {
		t.Fatalf("StopAccepting on a handed-over listener = %d, %v; want 0, nil", left, err)
	}
	if _, err := old.Accept(); err == nil {
		t.Fatal("the handed-over listener still accepts after StopAccepting")
	}

	accepted := make(chan error, 1)
	go func() {
		c, err := other.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.DialTimeout("tcp", other.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatalf("a new connection to the socket after the handover: %v", err)
	}
	c.Close()
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("the other holder's Accept: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the other holder never accepted the new connection (SYNs dropped?)")
	}
}

// secondDescriptor is another descriptor of tcp's socket, as the other process of an
// upgrade (or tableflip's copy) holds; it is closed at the end of the test.
func secondDescriptor(t *testing.T, tcp *net.TCPListener) *net.TCPListener {
	t.Helper()
	f, err := tcp.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}
