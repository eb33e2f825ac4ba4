//go:build linux

package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	// queuePollInterval is how often StopAccepting reads the accept-queue
	// length while the Serve loop drains it. The kernel gives no event for
	// "queue became empty", so this is a short poll.
	queuePollInterval = 2 * time.Millisecond
	// quietReads is how many consecutive empty reads, queuePollInterval
	// apart, count as "empty": a handshake that completes between reading
	// the half-done handshakes and reading the queue is caught by the next
	// pair of reads.
	quietReads = 2
)

// tcpFlagsOffset is where the TCP flags byte sits in the data a classic-BPF
// socket filter sees for a TCP socket: Linux runs it (tcp_filter, from
// tcp_v4_rcv / tcp_v6_rcv) after the IP header was pulled, so offset 0 is the
// start of the TCP header for IPv4 and IPv6 alike, and byte 13 holds the
// flags CWR ECE URG ACK PSH RST SYN FIN.
const tcpFlagsOffset = 13

const (
	tcpFlagSYN = 0x02
	tcpFlagACK = 0x10
)

// synDropProgram is the classic-BPF program StopAccepting attaches: it drops
// segments with SYN set and ACK clear (a new connection attempt) and passes
// everything else, notably the final ACK of a handshake that is half done.
// The listener's filter also runs for those ACKs, and accepted sockets
// inherit it, so it must never drop anything but a bare SYN.
func synDropProgram() []bpf.Instruction {
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: tcpFlagsOffset, Size: 1},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpBitsNotSet, Val: tcpFlagSYN, SkipTrue: 2}, // no SYN: pass
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: tcpFlagACK, SkipTrue: 1}, // SYN+ACK: pass
		/* 3 */ bpf.RetConstant{Val: 0}, // bare SYN: drop
		/* 4 */ bpf.RetConstant{Val: 0xffffffff}, // keep the whole segment
	}
}

// attachSYNFilter attaches synDropProgram to the listening socket. From then
// on the kernel ignores new SYNs (clients retransmit, then get a refusal once
// the socket is closed) while handshakes already under way still complete.
func attachSYNFilter(rc syscall.RawConn) error {
	raw, err := bpf.Assemble(synDropProgram())
	if err != nil {
		return fmt.Errorf("assemble SYN filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	}); err != nil {
		return err
	}
	if errors.Is(sockErr, unix.EOPNOTSUPP) {
		return fmt.Errorf("setsockopt SO_ATTACH_FILTER: %w (an MPTCP socket refuses socket filters; the listener must be plain TCP)", sockErr)
	}
	if errors.Is(sockErr, unix.EPERM) {
		return fmt.Errorf("setsockopt SO_ATTACH_FILTER: %w (Linux 6.x lets only a process with CAP_NET_ADMIN filter a TCP socket)", sockErr)
	}
	if sockErr != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_FILTER: %w", sockErr)
	}
	return nil
}

// acceptQueueLen returns how many connections have completed their handshake
// and wait for accept(2). For a socket in LISTEN state Linux reports that
// number (sk_ack_backlog) in tcpi_unacked, and the backlog limit in
// tcpi_sacked.
func acceptQueueLen(rc syscall.RawConn) (int, error) {
	var info *unix.TCPInfo
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		info, sockErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if sockErr != nil {
		return 0, fmt.Errorf("getsockopt TCP_INFO: %w", sockErr)
	}
	const tcpListen = 10 // TCP_LISTEN in include/net/tcp_states.h
	if info.State != tcpListen {
		return 0, fmt.Errorf("getsockopt TCP_INFO: socket state is %d, not LISTEN", info.State)
	}
	return int(info.Unacked), nil
}

// StopAccepting drains the listener and stops it without resetting any
// connection that the kernel has already accepted, or whose handshake it has
// already answered, as far as the kernel lets it:
//
//  1. it keeps new connections out. With the SYN filter (MethodSYNFilter) it
//     attaches a classic-BPF socket filter that drops incoming SYNs (SYN set,
//     ACK clear), so the kernel starts no new handshakes, while handshakes
//     under way and established connections are untouched. Linux 6.x
//     (commit 5d39580f68e6) lets only a process with CAP_NET_ADMIN attach a
//     filter to a TCP socket, so a non-root process, or a container with the
//     default capabilities, cannot: it then diverts new SYNs into a plugged
//     SO_REUSEPORT sink, which needs no capability (MethodReuseport, see
//     divert_linux.go), and only if that fails too uses MethodShutdown, below;
//  2. it waits, while the caller's Serve loop keeps calling Accept, until no
//     handshake to the listener is half done (sock_diag reports none in
//     SYN_RECV) and the kernel's accept queue is empty. A client whose SYN-ACK
//     is on its way believes it is connected and sends its request one round
//     trip later; stopping before its final ACK arrives would reset that
//     request. The wait for half-done handshakes is bounded by
//     SetHandshakeWait. With the filter or the sink the state holds once
//     reached, and it is read twice a couple of milliseconds apart. With
//     neither (MethodShutdown) new handshakes keep starting, so an idle moment is only
//     a moment: the socket is shut down the instant one is seen;
//  3. it stops the socket listening (shutdown(SHUT_RD), see Unlisten), for
//     every descriptor of it (the upgrader keeps a copy), and closes it. New
//     connection attempts are refused from then on, so clients retry
//     elsewhere at once instead of waiting for this process to exit.
//
// Connections it could not serve are counted in Unserved: those still in the
// accept queue when ctx ended, and handshakes still half done when the socket
// stopped (their clients believe they are connected; the kernel resets them).
// With MethodShutdown, a handshake that completes entirely between the last
// look at the queue and the shutdown (a few microseconds: only a client on the
// same host is that fast) is reset without being counted.
//
// It returns when the listener is closed. ctx bounds step 2: on expiry it
// stops anyway and returns how many connections were still queued (they are
// reset) with an error wrapping ctx.Err(). That happens, for example, when
// nothing calls Accept, or when the maxConns limit is reached and Accept
// blocks. Handshakes still half done when the handshake wait ends are reported
// in err too.
//
// If the half-done handshakes cannot be counted, it still drains and closes,
// and reports the failure in err. Only the first call does anything: later
// calls return (0, nil), and Close is a no-op from the moment StopAccepting
// starts. If Close came first, StopAccepting returns an error wrapping
// net.ErrClosed.
func (l *Listener) StopAccepting(ctx context.Context) (leftInQueue int, err error) {
	if ok, err := l.beginStop(); !ok {
		return 0, err
	}
	rc, err := l.tcp.SyscallConn()
	if err != nil {
		return 0, errors.Join(fmt.Errorf("stop accepting on %s: %w", l.addr, err), l.closeInner())
	}
	var errs []error
	method, why := MethodSYNFilter, ""
	if l.noFilter {
		method, why = MethodReuseport, "the SYN filter is turned off"
	} else if err := attachSYNFilter(rc); err != nil {
		method, why = MethodReuseport, err.Error()
	}
	var div *diversion
	if method == MethodReuseport {
		if l.noDivert {
			method, why = MethodShutdown, why+"; the reuseport diversion is turned off"
		} else if div, err = divert(rc, l.rescue); err != nil {
			method, why = MethodShutdown, why+"; reuseport diversion: "+err.Error()
		}
	}
	l.setMethod(method, why)
	halfOpen, err := newHalfOpenCounter(l.tcp.Addr())
	if err != nil {
		errs = append(errs, fmt.Errorf("stop accepting on %s: not waiting for handshakes under way (they may be reset at close): %w", l.addr, err))
	} else {
		defer halfOpen.Close()
	}
	w := drainWait{rc: rc, halfOpen: halfOpen, handshakeWait: l.handshakeWait(), quietReads: quietReads,
		strays: l.strays.waiting}
	if method == MethodShutdown {
		w.quietReads = 1
	}
	left, leftHalfOpen, err := w.wait(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("stop accepting on %s: %d connection(s) still in the accept queue were reset at close: %w", l.addr, left, err))
	}
	if err := l.closeInner(); err != nil {
		errs = append(errs, err)
	}
	if n := l.strays.closeAll(); n > 0 {
		left += n
		errs = append(errs, fmt.Errorf("stop accepting on %s: %d connection(s) taken from the reuseport sink were not accepted before the listener closed and were reset", l.addr, n))
	}
	if div != nil {
		if n := div.close(); n > 0 {
			left += n
			errs = append(errs, fmt.Errorf("stop accepting on %s: %d connection(s) reached the reuseport sink and were reset", l.addr, n))
		}
	}
	// Handshakes half done now were answered and will be reset when their ACK
	// comes. Counted after the stop: without the filter one may have begun
	// after the last look.
	if halfOpen != nil {
		if n, err := halfOpen.count(); err == nil {
			leftHalfOpen = n
		}
	}
	if leftHalfOpen > 0 {
		errs = append(errs, fmt.Errorf("stop accepting on %s: %d handshake(s) still half done when the listener stopped (handshake wait %v, drain.handshake_wait) will be reset", l.addr, leftHalfOpen, w.handshakeWait))
	}
	l.unserved.Add(int64(left + leftHalfOpen))
	return left, errors.Join(errs...)
}

// rescue hands connections the diversion took out of its sink to Accept; the stop waits
// for Accept to take them as for the accept queue.
func (l *Listener) rescue(cs []net.Conn) {
	if len(cs) == 0 {
		return
	}
	if log := l.fds.log.Load(); log != nil { // rare (a window of microseconds): worth a line
		addrs := make([]string, len(cs))
		for i, c := range cs {
			addrs[i] = c.RemoteAddr().String()
		}
		(*log).Info("served a client whose handshake completed in the reuseport sink", "address", l.addr, "clients", strings.Join(addrs, ","))
	}
	l.unserved.Add(int64(l.strays.put(cs))) // only after the listener closed
}

// closeInner stops the socket listening for every descriptor of it, then closes ours.
func (l *Listener) closeInner() error {
	unlisten := Unlisten(l.tcp) // still closed below
	if err := l.inner.Close(); err != nil {
		return errors.Join(unlisten, fmt.Errorf("close listener %s: %w", l.addr, err))
	}
	if unlisten != nil {
		return unlisten
	}
	return nil
}

// drainWait is step 2 of StopAccepting.
type drainWait struct {
	rc            syscall.RawConn
	halfOpen      *halfOpenCounter // nil: accept queue only
	handshakeWait time.Duration
	quietReads    int        // consecutive idle reads that end the wait
	strays        func() int // connections taken from the reuseport sink, not yet accepted; nil: none
}

// queued is the accept-queue length plus the connections taken from the sink that Accept
// has not taken yet.
func (w drainWait) queued() (int, error) {
	n, err := acceptQueueLen(w.rc)
	if err == nil && w.strays != nil {
		n += w.strays()
	}
	return n, err
}

// wait polls the accept-queue length and the half-done handshakes until both
// read zero w.quietReads times in a row, or ctx ends. Half-done handshakes stop
// counting once handshakeWait has passed (a client that never completes its
// handshake, or a SYN flood, must not hold the drain). On ctx's end it returns
// the current queue length and, if that is not zero, ctx.Err(). leftHalfOpen
// is how many handshakes were still half done when it gave up on them.
func (w drainWait) wait(ctx context.Context) (left, leftHalfOpen int, err error) {
	ticker := time.NewTicker(queuePollInterval)
	defer ticker.Stop()
	handshakesUntil := time.Now().Add(w.handshakeWait)
	halfOpen := w.halfOpen
	empty := 0
	for {
		// Count the handshakes first: one that completes between the two reads
		// is then seen in the queue instead of being missed by both.
		h := 0
		if halfOpen != nil {
			if !time.Now().Before(handshakesUntil) {
				h, err = halfOpen.count()
				if err == nil {
					leftHalfOpen = h
				}
				halfOpen, h = nil, 0
			} else if h, err = halfOpen.count(); err != nil {
				return 0, 0, err
			}
		}
		n, err := w.queued()
		if err != nil {
			return 0, leftHalfOpen, err
		}
		if n == 0 && h == 0 {
			empty++
			if empty >= w.quietReads {
				return 0, leftHalfOpen, nil
			}
		} else {
			empty = 0
		}
		select {
		case <-ctx.Done():
			n, err := acceptQueueLen(w.rc) // the strays not taken are counted at closeAll
			if err != nil {
				return 0, leftHalfOpen, err
			}
			if halfOpen != nil {
				if h, err := halfOpen.count(); err == nil {
					leftHalfOpen = h
				}
			}
			if n == 0 {
				return 0, leftHalfOpen, nil
			}
			return n, leftHalfOpen, ctx.Err()
		case <-ticker.C:
		}
	}
}
