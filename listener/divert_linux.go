//go:build linux

package listener

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/drainproxy/drainproxy/internal/clientconn"
)

// A diversion keeps new connections away from a listening socket without a socket filter
// (which Linux 6.x grants only to CAP_NET_ADMIN), so that the socket can finish the
// handshakes it has begun and be drained like with the filter. SO_REUSEPORT and its
// classic-BPF selection program need no capability:
//
//  1. the listener gets SO_REUSEPORT (allowed on a listening socket), and a second socket,
//     the sink, binds the same address with it and listens with a backlog of 0: the two
//     form a reuseport group, the listener at index 0, the sink at 1. Until a selection
//     program is attached the kernel spreads new SYNs over the two by a hash of the
//     addresses, so a client connecting in that moment can complete its handshake in the
//     sink (the kernel cannot take a program before the sink joins the group: attached to
//     a socket not yet listening, it goes with a group of the sink's own, which listen
//     leaves for the listener's);
//  2. a selection program sends the sink only the SYN of a plug, a connection this process
//     opens from a port it chose; everything else goes to the listener again. The plug
//     has not connected yet, so what the sink's queue holds now is such a client: it is
//     accepted from the sink and handed to the caller (rescue), which has the Serve loop
//     serve it as if the listener had accepted it. Then the plug connects and fills the
//     sink's accept queue. A client whose handshake was still half done on the sink
//     completes there when its final ACK comes; if that is before the plug's SYN, it is
//     taken out and rescued too, and the plug gets the place with its next SYN (plugIn);
//  3. a second program sends every SYN to the sink, whose full queue makes the kernel drop
//     them: the client sends its SYN again a second later and, the sockets being closed
//     by then, is refused. Handshakes begun on the listener are not looked up again, so
//     they complete there, and the listener's queue empties as the Serve loop accepts.
//
// At the end the sink is closed with the plug in it. A client whose final ACK reached the
// sink after the plug found it full: the kernel kept its handshake half done, the drain
// waits for it (drain.handshake_wait) like for any, and it is counted as unserved. So is
// anything else found in the sink at close.
type diversion struct {
	sink, plug int // file descriptors
	port       int // the listener's port, for the half-open count
	lost       int // clients taken from the sink that could not be handed on (reset)
}

// afterSinkListen, when set (by tests only), runs between the sink's listen and the first
// selection program: the window in which a client can begin its handshake in the sink.
// beforePlugConnect (tests only) runs between the first look at the sink and the plug's
// connect.
var afterSinkListen, beforePlugConnect func(sink int)

// skfNetOff is SKF_NET_OFF: a classic-BPF load at this offset plus k reads the network
// header at k, whatever the program's data starts at (for reuseport: the TCP payload).
const skfNetOff = -0x100000

// divert sets up the diversion on the socket under rc. On any failure it undoes what it
// did (the listener keeps SO_REUSEPORT, which changes nothing alone) and says why.
// rescue gets the clients that completed their handshake in the sink before the first
// program (step 2), as soon as they are taken out of it, failure or not: established
// connections, to be served.
func divert(rc syscall.RawConn, rescue func([]net.Conn)) (_ *diversion, err error) {
	var sa unix.Sockaddr
	var family, v6only int
	var already int
	var ctlErr error
	if err := rc.Control(func(fd uintptr) {
		if sa, ctlErr = unix.Getsockname(int(fd)); ctlErr != nil {
			return
		}
		if already, ctlErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT); ctlErr != nil || already != 0 {
			return
		}
		switch sa.(type) {
		case *unix.SockaddrInet4:
			family = unix.AF_INET
		case *unix.SockaddrInet6:
			family = unix.AF_INET6
			if v6only, ctlErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); ctlErr != nil {
				return
			}
		}
		ctlErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return nil, err
	}
	switch {
	case ctlErr != nil:
		return nil, ctlErr
	case already != 0:
		return nil, errors.New("the socket already has SO_REUSEPORT: another socket may share its port")
	case family == 0:
		return nil, fmt.Errorf("the socket's address is a %T, not IPv4 or IPv6", sa)
	}
	d := &diversion{sink: -1, plug: -1}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.sink, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("sink socket: %w", err)
	}
	for _, o := range []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1},
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
	} {
		if err := unix.SetsockoptInt(d.sink, o.level, o.opt, o.v); err != nil {
			return nil, fmt.Errorf("sink setsockopt: %w", err)
		}
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(d.sink, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return nil, fmt.Errorf("sink setsockopt IPV6_V6ONLY: %w", err)
		}
	}
	if err := unix.Bind(d.sink, sa); err != nil {
		return nil, fmt.Errorf("sink bind: %w", err)
	}

	// The plug: a socket bound to a port of its own, connecting to the listener's address
	// (loopback when it is a wildcard).
	target, plugFrom, err := plugAddresses(sa, v6only == 1)
	if err != nil {
		return nil, err
	}
	plugFamily := unix.AF_INET
	if _, ok := target.(*unix.SockaddrInet6); ok {
		plugFamily = unix.AF_INET6
	}
	if d.plug, err = unix.Socket(plugFamily, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("plug socket: %w", err)
	}
	if err := unix.Bind(d.plug, plugFrom); err != nil {
		return nil, fmt.Errorf("plug bind: %w", err)
	}
	bound, err := unix.Getsockname(d.plug)
	if err != nil {
		return nil, fmt.Errorf("plug getsockname: %w", err)
	}

	if err := unix.Listen(d.sink, 0); err != nil {
		return nil, fmt.Errorf("sink listen: %w", err)
	}
	if afterSinkListen != nil {
		afterSinkListen(d.sink)
	}
	if err := attachReuseportProgram(d.sink, plugOnlyProgram(bound)); err != nil {
		return nil, err
	}
	// The plug has not connected yet and the program sends the sink nothing else: what its
	// queue holds is clients that came in the moment before the program.
	strays, lost, _ := takeStrays(d.sink, bound)
	d.lost = lost
	rescue(strays)
	if beforePlugConnect != nil {
		beforePlugConnect(d.sink)
	}
	if err := unix.Connect(d.plug, target); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return nil, fmt.Errorf("plug connect: %w", err)
	}
	if err := d.plugIn(bound, rescue, 3*time.Second); err != nil {
		return nil, err
	}
	if err := attachReuseportProgram(d.sink, []bpf.Instruction{bpf.RetConstant{Val: 1}}); err != nil {
		return nil, err
	}
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		d.port = s.Port
	case *unix.SockaddrInet6:
		d.port = s.Port
	}
	return d, nil
}

// plugAddresses returns where the plug connects (the listener's address; loopback for a
// wildcard) and the address it binds first (port 0: the kernel picks one).
func plugAddresses(sa unix.Sockaddr, v6only bool) (target, from unix.Sockaddr, err error) {
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		if s.Addr == [4]byte{} {
			return &unix.SockaddrInet4{Port: s.Port, Addr: [4]byte{127, 0, 0, 1}}, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, nil
		}
		return &unix.SockaddrInet4{Port: s.Port, Addr: s.Addr}, &unix.SockaddrInet4{Addr: s.Addr}, nil
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(s.Addr)
		switch {
		case ip.IsUnspecified() && !v6only:
			return &unix.SockaddrInet4{Port: s.Port, Addr: [4]byte{127, 0, 0, 1}}, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, nil
		case ip.IsUnspecified():
			lo := netip.IPv6Loopback().As16()
			return &unix.SockaddrInet6{Port: s.Port, Addr: lo}, &unix.SockaddrInet6{Addr: lo}, nil
		case ip.Is4In6():
			a := ip.Unmap().As4()
			return &unix.SockaddrInet4{Port: s.Port, Addr: a}, &unix.SockaddrInet4{Addr: a}, nil
		}
		return &unix.SockaddrInet6{Port: s.Port, Addr: s.Addr, ZoneId: s.ZoneId}, &unix.SockaddrInet6{Addr: s.Addr, ZoneId: s.ZoneId}, nil
	}
	return nil, nil, fmt.Errorf("address %T", sa)
}

// plugOnlyProgram selects the sink (index 1) for segments from the plug's address and
// port, and the listener (index 0) for every other.
func plugOnlyProgram(plug unix.Sockaddr) []bpf.Instruction {
	net := func(off int) uint32 { return uint32(skfNetOff + off) }
	var prog []bpf.Instruction
	switch p := plug.(type) {
	case *unix.SockaddrInet4:
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: net(0), Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 4, SkipTrue: 5}, // not IPv4
			bpf.LoadAbsolute{Off: net(12), Size: 4},                 // source address
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(p.Addr[:]), SkipTrue: 3},
			bpf.LoadMemShift{Off: net(0)},          // X = IP header length
			bpf.LoadIndirect{Off: net(0), Size: 2}, // TCP source port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p.Port), SkipTrue: 1},
		}
	case *unix.SockaddrInet6:
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: net(0), Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 6, SkipTrue: 10}, // not IPv6
		}
		for i := 0; i < 16; i += 4 {
			prog = append(prog,
				bpf.LoadAbsolute{Off: net(8 + i), Size: 4},
				bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(p.Addr[i : i+4]), SkipTrue: uint8(8 - 2*(i/4))}, // to "ret 0"
			)
		}
		prog = append(prog,
			bpf.LoadAbsolute{Off: net(40), Size: 2}, // TCP source port (no extension headers from the plug)
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p.Port), SkipTrue: 1},
		)
	}
	return append(prog, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 1})
}

func attachReuseportProgram(fd int, prog []bpf.Instruction) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("assemble the reuseport program: %w", err)
	}
	f := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		f[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	p := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &p); err != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}

// takeStrays accepts, without blocking, every connection queued on the sink. Those it
// cannot turn into a net.Conn are closed (reset) and counted in lost; one it cannot accept
// stays in the sink and is counted at close. The plug's own connection (its peer is the
// plug's address, bound) is closed and reported in plug: its place in the sink is free.
func takeStrays(sink int, bound unix.Sockaddr) (strays []net.Conn, lost int, plug bool) {
	for {
		fd, peer, err := unix.Accept4(sink, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		switch {
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED):
			continue
		case err != nil: // EAGAIN: the queue is empty
			return strays, lost, plug
		case sameAddrPort(peer, bound):
			unix.Close(fd)
			plug = true
			continue
		}
		f := os.NewFile(uintptr(fd), "reuseport sink client")
		c, err := net.FileConn(f) // a copy of the descriptor, in Go's poller
		f.Close()
		if err != nil {
			lost++
			continue
		}
		strays = append(strays, c)
	}
}

// sameAddrPort reports whether a and b are the same IP address (an IPv4-mapped IPv6
// address equals its IPv4 one) and port.
func sameAddrPort(a, b unix.Sockaddr) bool {
	ap := func(sa unix.Sockaddr) netip.AddrPort {
		switch s := sa.(type) {
		case *unix.SockaddrInet4:
			return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port))
		case *unix.SockaddrInet6:
			return netip.AddrPortFrom(netip.AddrFrom16(s.Addr).Unmap(), uint16(s.Port))
		}
		return netip.AddrPort{}
	}
	x := ap(a)
	return x.IsValid() && x == ap(b)
}

// plugIn waits until the plug holds the sink's place. The program sends the sink nothing
// but the plug, yet a client whose handshake was half done on the sink when the program
// went on (its final ACK still on its way when takeStrays looked) completes there
// afterwards; if it takes the place before the plug, the kernel drops the plug's SYN. Such
// a client is taken out and rescued too, and the plug gets the place when it sends its SYN
// again (a second later). New clients keep going to the listener meanwhile.
func (d *diversion) plugIn(bound unix.Sockaddr, rescue func([]net.Conn), timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; {
		n, err := sinkQueueLen(d.sink)
		if err != nil {
			return err
		}
		if n > 0 && d.plugConnected() {
			return nil
		}
		if n > 0 {
			strays, lost, plug := takeStrays(d.sink, bound)
			d.lost += lost
			rescue(strays)
			if plug { // it connected between the two looks, and its place is gone with it
				return errors.New("the plug's connection was taken out of the sink with a client's")
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the plug did not reach the sink's queue in %v", timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// plugConnected reports whether the plug's handshake completed: it holds a place in the
// sink's queue (else a client took the place, and the plug's SYN was dropped).
func (d *diversion) plugConnected() bool {
	if d.plug < 0 {
		return false
	}
	info, err := unix.GetsockoptTCPInfo(d.plug, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State == clientconn.StateEstablished
}

// sinkQueueLen is the sink's accept-queue length (see acceptQueueLen).
func sinkQueueLen(fd int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("getsockopt TCP_INFO: %w", err)
	}
	return int(info.Unacked), nil
}

// close closes the sink (resetting the plug) and the plug, and returns how many clients
// were reset: those found in the sink's queue besides the plug, and those takeStrays
// could not hand on.
func (d *diversion) close() (strays int) {
	strays, d.lost = d.lost, 0
	if d.sink >= 0 {
		if n, err := sinkQueueLen(d.sink); err == nil {
			if d.plugConnected() {
				n-- // the plug's own place
			}
			strays += max(n, 0)
		}
		unix.Shutdown(d.sink, unix.SHUT_RD)
		unix.Close(d.sink)
		d.sink = -1
	}
	if d.plug >= 0 {
		unix.Close(d.plug)
		d.plug = -1
	}
	return strays
}
