package listener

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestListenPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	addr := busy.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := Listen(ctx, addr, 0)
	if err == nil {
		l.Close()
		t.Fatalf("Listen(%s) on a port in use: got no error", addr)
	}
	msg := err.Error()
	if !strings.Contains(msg, addr) || !strings.Contains(msg, "in use") {
		t.Errorf("error %q should name %s and say the port is in use", msg, addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q should wrap EADDRINUSE", msg)
	}
	t.Log(msg)
}

func TestListenBadAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{"127.0.0.1", "127.0.0.1:99999"} {
		l, err := Listen(ctx, addr, 0)
		if err == nil {
			l.Close()
			t.Fatalf("Listen(%q): got no error", addr)
		}
		if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "port") {
			t.Errorf("Listen(%q): error %q should name the address and say what is wrong with the port", addr, err)
		}
		t.Log(err)
	}
}
