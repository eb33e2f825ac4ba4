//go:build linux

package listener

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// What a reload that removes a listener relies on: tableflip keeps a second descriptor of
// every socket it was given and cannot drop it, so closing ours leaves the port bound and
// queueing connections nobody accepts. Unlisten on our descriptor must stop the socket
// for the copy too: connects are refused, not queued; the copy no longer listens (what an
// upgrade's child checks before using an inherited socket); and the address binds again.
func TestUnlistenStopsEveryDescriptorOfTheSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := testenv.FreeAddr(t)
	tcp, err := Bind(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	copyTCP := secondDescriptor(t, tcp) // the copy tableflip keeps
	if ok, err := Listening(copyTCP); err != nil || !ok {
		t.Fatalf("Listening on the copy before Unlisten = %v, %v; want true", ok, err)
	}

	if err := Unlisten(tcp); err != nil {
		t.Fatal(err)
	}
	tcp.Close()

	if ok, err := Listening(copyTCP); err != nil || ok {
		t.Fatalf("Listening on the copy after Unlisten = %v, %v; want false", ok, err)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("a connect to %s succeeded after Unlisten, although one descriptor is still open", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a connect after Unlisten failed with %v, want connection refused (not a hang)", err)
	}
	again, err := Bind(ctx, addr)
	if err != nil {
		t.Fatalf("binding %s again after Unlisten: %v", addr, err)
	}
	again.Close()
}

// Remove drains and then stops the socket for its copy too; a handed-over socket (systemd
// holds it) stays listening for its other holder.
func TestRemoveStopsTheCopyUnlessHandedOver(t *testing.T) {
	for _, handedOver := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tcp, err := Bind(ctx, testenv.FreeAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		copyTCP := secondDescriptor(t, tcp)
		l := FromTCP(tcp, 0)
		if handedOver {
			l.HandOver()
		}
		if _, err := l.Remove(ctx); err != nil {
			t.Fatalf("handedOver=%v: Remove: %v", handedOver, err)
		}
		ok, err := Listening(copyTCP)
		if err != nil || ok != handedOver {
			t.Errorf("handedOver=%v: the copy listens = %v, %v after Remove; want %v", handedOver, ok, err, handedOver)
		}
		cancel()
	}
}
