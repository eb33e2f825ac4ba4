//go:build linux

package netrig

import (
	"context"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestRoundTrip: a 50 ms link makes connects take about 50 ms, and data crosses both ways.
func TestRoundTrip(t *testing.T) {
	const rtt = 50 * time.Millisecond
	r := New(t, Options{RTT: rtt})
	ln, err := r.Listen(r.Server, ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	var connects []time.Duration
	for range 10 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := r.Dial(ctx, ln.Addr().String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		connects = append(connects, time.Since(start))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q %v", buf, err)
		}
		c.Close()
	}
	slices.Sort(connects)
	t.Logf("connect times over a %v link: min %v, median %v, max %v", rtt, connects[0], connects[len(connects)/2], connects[len(connects)-1])
	// A connect is one round trip: it cannot be faster than the link (the delay is real),
	// whatever the machine's load.
	if connects[0] < rtt {
		t.Fatalf("connect took %v over a %v link: packets are not delayed", connects[0], rtt)
	}
}

// TestNamespacesAreSeparate: the server side cannot be reached from the test's own
// namespace, so nothing in a rig test leaks onto the host's network.
func TestNamespacesAreSeparate(t *testing.T) {
	r := New(t, Options{RTT: 10 * time.Millisecond})
	ln, err := r.Listen(r.Server, ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("reached the server namespace from the host's namespace")
	}
}

// TestLoss drops about the fraction asked for.
func TestLoss(t *testing.T) {
	r := New(t, Options{RTT: 2 * time.Millisecond, Loss: 0.2})
	ln, err := r.Listen(r.Server, ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := r.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1000)
	for range 200 {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	d, p := r.Dropped.Load(), r.Passed.Load()
	if d == 0 {
		t.Fatalf("dropped %d of %d packets, want about 20%%", d, d+p)
	}
	t.Logf("dropped %d of %d packets", d, d+p)
}
