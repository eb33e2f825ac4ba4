//go:build linux

// Package netrig gives tests a network with real round trips: two network namespaces, a
// client side and a server side, joined by a point-to-point link that delays every packet
// by a fixed time and can drop a fraction of them. Loopback hides the races a drain has
// with clients 50-150 ms away (a handshake whose final ACK is in flight, a keep-alive
// request that crosses our close); this rig shows them.
//
// The kernels we run on have no netem qdisc, so the link is made in user space: one TUN
// device in each namespace, and a forwarder in the test process that reads each packet
// from one device, holds it for half the round trip and writes it to the other.
//
// Processes and sockets join a namespace through Rig.Do, which runs a function on an OS
// thread moved into the namespace: sockets created there belong to it (and keep working
// from any thread), and processes started there inherit it.
//
// It needs root and iproute2; New skips the test on a developer's machine that lacks them
// and fails it in CI (package testenv).
package netrig

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// The link's addresses, the same in every rig: each rig has namespaces of its own.
const (
	ClientIP = "10.77.0.1"
	ServerIP = "10.77.0.2"
)

// Options shape the link.
type Options struct {
	// RTT is the round trip the link adds: each direction holds a packet for RTT/2.
	RTT time.Duration
	// Loss is the fraction (0 to 1) of packets dropped, in each direction, at random.
	Loss float64
	// Observe, if set, sees every IPv4 packet the link carries or drops, on the
	// forwarder's goroutine, before it is delayed: tests trace a lost request's
	// connection with it (see TCPSegment). It must be quick and must not keep p.
	Observe func(p []byte, dropped bool)
	// Drop, if set, drops each packet for which it returns true, besides Loss: tests
	// lose a chosen segment with it. Same goroutine and rules as Observe.
	Drop func(p []byte) bool
}

// Rig is a pair of namespaces joined by a delaying link.
type Rig struct {
	Client, Server string // namespace names (ip netns)
	opts           Options

	tuns    []*os.File
	wg      sync.WaitGroup
	Dropped atomic.Int64 // packets the link dropped on purpose (Loss) or because its queue was full
	Passed  atomic.Int64 // packets the link delivered
}

// New builds a rig for t and removes it (devices, forwarder, namespaces) when t ends,
// whether t passes or fails.
func New(t testing.TB, opts Options) *Rig {
	t.Helper()
	testenv.NeedRoot(t, "network namespaces and TUN devices")
	testenv.NeedProgram(t, "ip", "iproute2")
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		testenv.Unavailable(t, "cannot open /dev/net/tun (%v): the rig's delaying link needs TUN devices", err)
	} else {
		f.Close()
	}
	id := randomID()
	r := &Rig{Client: "dpc-" + id, Server: "dps-" + id, opts: opts}
	for _, ns := range []string{r.Client, r.Server} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			testenv.Unavailable(t, "cannot create network namespace %s: %v: %s", ns, err, strings.TrimSpace(string(out)))
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("remove network namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	t.Cleanup(r.stopLink) // runs before the namespaces go (cleanups run last first)

	type side struct{ ns, dev, local, peer string }
	sides := []side{
		{r.Client, "dpc" + id, ClientIP, ServerIP},
		{r.Server, "dps" + id, ServerIP, ClientIP},
	}
	for _, s := range sides {
		f, err := openTUN(s.dev)
		if err != nil {
			t.Fatalf("netrig: %v", err)
		}
		r.tuns = append(r.tuns, f)
		for _, args := range [][]string{
			{"link", "set", "dev", s.dev, "netns", s.ns},
			{"-n", s.ns, "link", "set", "lo", "up"},
			{"-n", s.ns, "addr", "add", s.local, "peer", s.peer, "dev", s.dev},
			{"-n", s.ns, "link", "set", "dev", s.dev, "mtu", "1500", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("netrig: ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}
	r.forward(r.tuns[0], r.tuns[1]) // client -> server
	r.forward(r.tuns[1], r.tuns[0]) // server -> client
	return r
}

func randomID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// openTUN creates a TUN device (layer 3, no packet-info header) and returns its fd as a
// pollable file, so that closing it ends a blocked read.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN device %s (ioctl TUNSETIFF): %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

type packet struct {
	due  time.Time
	data []byte
}

// queueLen bounds the packets in flight in one direction, like a router's queue: at
// 150 ms that is about 27 Mbit/s of 1500-byte packets, plenty for the tests' loads.
const queueLen = 4096

// forward moves packets from in to out, each held for RTT/2 and some dropped.
func (r *Rig) forward(in, out *os.File) {
	delay := r.opts.RTT / 2
	q := make(chan packet, queueLen)
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		defer close(q)
		buf := make([]byte, 65536)
		for {
			n, err := in.Read(buf)
			if err != nil {
				return // closed by stopLink
			}
			dropped := r.opts.Loss > 0 && mrand.Float64() < r.opts.Loss || r.opts.Drop != nil && r.opts.Drop(buf[:n])
			if r.opts.Observe != nil {
				r.opts.Observe(buf[:n], dropped)
			}
			if dropped {
				r.Dropped.Add(1)
				continue
			}
			p := packet{due: time.Now().Add(delay), data: append([]byte(nil), buf[:n]...)}
			select {
			case q <- p:
			default:
				r.Dropped.Add(1)
			}
		}
	}()
	go func() {
		defer r.wg.Done()
		timer := time.NewTimer(0)
		<-timer.C
		for p := range q {
			if wait := time.Until(p.due); wait > 0 {
				timer.Reset(wait)
				<-timer.C
			}
			if _, err := out.Write(p.data); err != nil {
				if errors.Is(err, os.ErrClosed) {
					for range q { // let the reader finish
					}
					return
				}
				continue // e.g. the namespace's device is going down
			}
			r.Passed.Add(1)
		}
	}()
}

func (r *Rig) stopLink() {
	for _, f := range r.tuns {
		f.Close()
	}
	r.wg.Wait()
}

// Do runs fn on an OS thread inside namespace ns. Sockets fn creates belong to ns, and
// processes it starts run in ns. fn must not start goroutines that need ns: they run on
// other threads.
func (r *Rig) Do(ns string, fn func() error) error {
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open this thread's network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	defer func() {
		// A thread that cannot go back stays locked: Go ends it with the goroutine
		// instead of reusing it in the wrong namespace.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// Dial connects from the client namespace to addr (on the server side); it never retries.
func (r *Rig) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := r.Do(r.Client, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// Listen opens a TCP listener in namespace ns.
func (r *Rig) Listen(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := r.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Segment is what a trace needs of one TCP segment over IPv4.
type Segment struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    byte // TCP flags: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10
	Payload  int  // bytes of data
}

// TCPSegment parses p as an IPv4 TCP segment; ok is false for anything else.
func TCPSegment(p []byte) (s Segment, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return s, false
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if total > len(p) || len(p) < ihl+20 {
		return s, false
	}
	tcp := p[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return s, false
	}
	src, _ := netip.AddrFromSlice(p[12:16])
	dst, _ := netip.AddrFromSlice(p[16:20])
	return Segment{
		Src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		Dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		Seq:     binary.BigEndian.Uint32(tcp[4:8]),
		Ack:     binary.BigEndian.Uint32(tcp[8:12]),
		Flags:   tcp[13],
		Payload: len(tcp) - off,
	}, true
}

// String is the segment as a trace line: flags, relative nothing, sizes.
func (s Segment) String() string {
	var f []byte
	for i, c := range "FSRPA" {
		if s.Flags&(1<<i) != 0 {
			f = append(f, byte(c))
		}
	}
	return fmt.Sprintf("%v > %v [%s] seq %d ack %d len %d", s.Src, s.Dst, f, s.Seq, s.Ack, s.Payload)
}
