//go:build linux

package listener

import (
	"context"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// attachFilter attaches a classic-BPF program to a socket (a test's stand-in for a lossy
// network: the kernel drops what the program rejects before TCP sees it).
func attachFilter(t *testing.T, rc syscall.RawConn, prog []bpf.Instruction) {
	t.Helper()
	raw, err := bpf.Assemble(prog)
	if err != nil {
		t.Fatal(err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
	}); err != nil {
		t.Fatal(err)
	}
	if sockErr != nil {
		t.Fatal(sockErr)
	}
}

// onlySYNs passes segments with SYN set and drops the rest: on a listener it lets
// handshakes start but not finish, as if the client's final ACK were still on its way.
var onlySYNs = []bpf.Instruction{
	bpf.LoadAbsolute{Off: tcpFlagsOffset, Size: 1},
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: tcpFlagSYN, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 0xffffffff},
}

func countHalfOpen(t *testing.T, l *Listener) int {
	t.Helper()
	h, err := newHalfOpenCounter(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n, err := h.count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func waitHalfOpen(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := countHalfOpen(t, l)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d handshakes half done, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStopAcceptingWaitsForHalfOpenHandshakes is a client far away on loopback: its
// connect has returned and it has sent its request, but its final ACK and request have
// not reached the listener (a filter drops them, as a long round trip delays them).
// StopAccepting must not close while that handshake is half done: the retransmission
// completes it, the connection is accepted and the client gets its answer. Closing once
// the accept queue reads empty, as before, resets it.
func TestStopAcceptingWaitsForHalfOpenHandshakes(t *testing.T) {
	for _, method := range stopMethods {
		for _, host := range loopbacks {
			t.Run(method+"/"+host, func(t *testing.T) { testHalfOpen(t, method, host) })
		}
	}
}

func testHalfOpen(t *testing.T, method, host string) {
	{
		{
			l := newListener(t, host, 0)
			useMethod(l, method)
			rc, err := l.tcp.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			attachFilter(t, rc, onlySYNs)
			c := dial(t, l.Addr().String())
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			waitHalfOpen(t, l, 1)
			if n := queueLen(t, l); n != 0 {
				t.Fatalf("accept queue holds %d, want 0 while the handshake is half done", n)
			}

			served := make(chan error, 1)
			go func() {
				sc, err := l.Accept()
				if err != nil {
					served <- err
					return
				}
				defer sc.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(sc, buf); err != nil {
					served <- err
					return
				}
				_, err = sc.Write([]byte("pong"))
				served <- err
			}()
			l.SetHandshakeWait(10 * time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// StopAccepting's own filter replaces onlySYNs, so the client's
			// retransmitted request now completes the handshake. Without it, the test
			// takes onlySYNs off once new connections are kept out: the final ACK
			// arrives after the stop began.
			if method != MethodSYNFilter {
				go func() {
					for m, _ := l.StopMethod(); m == ""; m, _ = l.StopMethod() {
						time.Sleep(time.Millisecond)
					}
					rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0) })
				}()
			}
			if _, err := l.StopAccepting(ctx); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("client read %q, %v; want pong (its handshake was reset at close)", buf, err)
			}
			if err := <-served; err != nil {
				t.Fatalf("server side: %v", err)
			}
		}
	}
}

// TestStopAcceptingHandshakeWaitBound: a handshake that never completes (the client's
// side drops our SYN-ACKs) holds the close only for the handshake wait, and is reported.
func TestStopAcceptingHandshakeWaitBound(t *testing.T) {
	l := newListener(t, "127.0.0.1", 0)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		// Drop everything the client socket receives: the SYN-ACK never arrives.
		attachFilter(t, rc, []bpf.Instruction{bpf.RetConstant{Val: 0}})
		return nil
	}}
	dialCtx, stopDial := context.WithCancel(context.Background())
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := d.DialContext(dialCtx, "tcp", l.Addr().String()); err == nil {
			c.Close()
		}
	}()
	t.Cleanup(func() { stopDial(); <-dialed })
	waitHalfOpen(t, l, 1)

	const bound = 300 * time.Millisecond
	l.SetHandshakeWait(bound)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := l.StopAccepting(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "1 handshake(s) still half done") {
		t.Fatalf("StopAccepting error = %v, want it to report the half-done handshake", err)
	}
	if took < bound || ctx.Err() != nil {
		t.Fatalf("StopAccepting returned after %v, want after the %v handshake wait and before the context's end", took, bound)
	}
}
