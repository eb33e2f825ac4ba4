// Package listener binds the public TCP listener and closes it without losing
// a connection the kernel has already accepted on our behalf.
//
// Closing a listening socket makes Linux reset every connection that finished
// its handshake but sits in the accept queue, not yet taken by accept(2), and
// every handshake still half done (the client, one round trip away, already
// believes it is connected). Clients that already sent a request on such a
// connection lose it. StopAccepting avoids that: it first keeps new
// connections away from the socket, lets the handshakes under way finish and
// the server's Serve loop accept what is queued, and only then stops the
// socket, for every descriptor of it, so that a new connect is refused at once.
//
// How new connections are kept out depends on what the kernel allows (the
// "listener stopped" log line says which):
//   - MethodSYNFilter: a classic-BPF socket filter drops new SYNs. Linux 6.x
//     allows it only with CAP_NET_ADMIN (root on a host; not our image);
//   - MethodReuseport: a second socket joins the port with SO_REUSEPORT, a
//     connection of our own fills its accept queue, and a reuseport selection
//     program sends it every new SYN, which the kernel drops. No capability;
//   - MethodShutdown: the last resort, when neither works: the socket is shut
//     down at the first moment nothing is queued or half done; what begins in
//     the microseconds before is reset and counted (Unserved).
//
// With the first two, a client that connects while the listener stops gets no
// answer to its SYN, sends it again a second later and is refused then (with
// the third it is still served until the shutdown); with all three, a client
// that connects after StopAccepting returned is refused at once (on the host,
// in a network namespace, and in a container on its own network or through a
// port Docker publishes with DNAT; through docker-proxy, which serves a port
// published on 127.0.0.1, the client sees its connection accepted by the
// proxy and then closed). The exception is a socket another process holds
// (HandOver: the next process of an upgrade, or systemd): StopAccepting then
// only closes this process's descriptor, and new connections go to, or wait
// for, the other holder.
package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Listener is a TCP listener that can be drained with StopAccepting.
// It implements net.Listener and is ready for http.Server.Serve.
type Listener struct {
	inner net.Listener     // used by Accept, Addr and Close: tcp itself, or the connection limit around it
	tcp   *net.TCPListener // the socket underneath, for the SYN filter and TCP_INFO
	limit *limitListener   // inner when maxConns > 0, else nil
	addr  string           // the bound address, for messages

	handshakeWaitNs atomic.Int64 // SetHandshakeWait; zero: DefaultHandshakeWait
	fds             fdWarner     // SetLogger
	reserve         *fdReserve   // descriptors kept from public clients
	strays          *strayQueue  // connections StopAccepting took from the reuseport sink, for Accept

	mu       sync.Mutex
	stopping bool // StopAccepting has begun; Close and later StopAccepting calls do nothing
	closed   bool // Close has closed the socket

	handedOver atomic.Bool // another process accepts on the socket too (handover.go)

	noFilter bool         // tests: StopAccepting behaves as if the SYN filter were refused
	noDivert bool         // tests: ... and as if the reuseport diversion failed
	method   atomic.Value // stopMethod: how StopAccepting kept new connections out
	unserved atomic.Int64 // connections StopAccepting could not serve (Unserved)
}

// How StopAccepting keeps new connections out while it drains the accept queue.
const (
	// MethodSYNFilter: a socket filter drops new SYNs while handshakes under way finish;
	// nothing the kernel answered is reset. Needs CAP_NET_ADMIN on Linux 6.x.
	MethodSYNFilter = "syn-filter"
	// MethodReuseport: without a filter, a second socket joins the listener's port with
	// SO_REUSEPORT and, through a reuseport selection program, takes every new SYN into an
	// accept queue kept full, where the kernel drops them; handshakes under way finish on
	// the listener. A client that completed its handshake in the sink before that is taken
	// out and served. Nothing the kernel answered is reset, except, rarely, a client whose
	// final ACK reached the sink after it was full (counted in Unserved; see divert_linux.go).
	// Needs no capability.
	MethodReuseport = "reuseport"
	// MethodShutdown: with neither, the socket is shut down at the first moment no
	// handshake is under way and the accept queue is empty; handshakes that begin in the
	// microseconds before are reset and counted in Unserved.
	MethodShutdown = "shutdown"
	// MethodClose: the listener is only closed (not Linux).
	MethodClose = "close"
)

type stopMethod struct{ name, why string }

func (l *Listener) setMethod(name, why string) { l.method.Store(stopMethod{name, why}) }

// StopMethod says how StopAccepting kept new connections out (MethodSYNFilter,
// MethodShutdown or MethodClose) and, when it could not use the SYN filter, why not.
// Both are empty before StopAccepting, and for a handed-over listener.
func (l *Listener) StopMethod() (method, why string) {
	m, _ := l.method.Load().(stopMethod)
	return m.name, m.why
}

// Unserved is how many connections StopAccepting (or Remove) closed without serving:
// still in the accept queue when its context ended, or with a handshake the kernel had
// answered that was still half done when the socket stopped listening. Their clients
// believed they were connected and see a reset.
func (l *Listener) Unserved() int64 { return l.unserved.Load() }

// Listen binds addr ("host:port", tcp; IPv4 or IPv6) and returns a listener
// ready for http.Server.Serve. maxConns > 0 limits concurrently accepted
// connections: at the limit, a new client waiting in the kernel's accept queue
// gets the place of the keep-alive connection idle longest (which is closed),
// and without an idle one Accept blocks until a connection closes or turns
// idle. Set the server's ConnState to the listener's ConnState (or call it from
// there) so that it knows which connections are idle.
// Errors name the address and say what to fix.
func Listen(ctx context.Context, addr string, maxConns int) (*Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, &listenError{
			msg: fmt.Sprintf("listen %s: %v (write host:port, e.g. 127.0.0.1:8080, [::1]:8080 or :8080)", addr, addrErrText(err)),
			err: err,
		}
	}
	var lc net.ListenConfig
	// Go (1.24 and later) opens listeners as MPTCP on Linux when the kernel
	// allows it. An MPTCP socket refuses SO_ATTACH_FILTER (EOPNOTSUPP), which
	// StopAccepting needs, so ask for plain TCP.
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, describeListenError(addr, err)
	}
	tcp, ok := ln.(*net.TCPListener)
	if !ok { // net.ListenConfig.Listen with "tcp" always returns *net.TCPListener.
		_ = ln.Close()
		return nil, fmt.Errorf("listen %s: got a %T, want a *net.TCPListener", addr, ln)
	}
	return FromTCP(tcp, maxConns), nil
}

// Accept waits for and returns the next connection. After StopAccepting or
// Close has closed the listener it returns an error wrapping net.ErrClosed.
// Short of file descriptors, it closes new clients at once (see fdReserve).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.acceptInner()
		if err != nil && errors.Is(err, syscall.EINVAL) && l.isStopping() {
			// The socket stopped listening (Unlisten) just before it was closed.
			err = &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		}
		switch {
		case err == nil && l.reserve.overHeadroom(c):
			c.Close()
			l.reserve.refused.Add(1)
			l.fds.noteRefused(l.Addr(), "descriptor headroom", l.reserve.limit.Load())
			continue
		case err == nil:
			return c, nil
		case errors.Is(err, net.ErrClosed):
			l.reserve.release()
		case outOfDescriptors(err) && l.reserve.refuseWaiting(l.tcp):
			l.fds.noteRefused(l.Addr(), "accept: "+err.Error(), l.reserve.limit.Load())
			continue
		default:
			l.fds.note(l.inner.Addr(), err)
		}
		return c, err
	}
}

// acceptInner accepts through the connection limit when there is one, else on the socket;
// either way a connection taken from the reuseport sink comes first.
func (l *Listener) acceptInner() (net.Conn, error) {
	if l.limit != nil {
		return l.limit.Accept()
	}
	return l.strays.accept()
}

// RefusedForDescriptors is how many clients Accept closed at once for want of file
// descriptors.
func (l *Listener) RefusedForDescriptors() int64 { return l.reserve.refused.Load() }

func (l *Listener) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

// Addr returns the bound address (with the real port when addr asked for :0).
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close closes the listener at once; connections still in the kernel's accept
// queue are reset. Use StopAccepting for a drain. Once StopAccepting has been
// called, Close does nothing and returns nil (http.Server.Shutdown and the end
// of http.Server.Serve both call Close; neither may cut the drain short).
// Calling Close again also returns nil.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.stopping || l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.reserve.release()
	return l.inner.Close()
}

// beginStop marks the start of StopAccepting. It returns false, with the
// error StopAccepting should return, when there is nothing to do.
func (l *Listener) beginStop() (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopping:
		return false, nil
	case l.closed:
		l.stopping = true
		return false, fmt.Errorf("stop accepting on %s: the listener was already closed with Close, so its accept queue was not drained: %w", l.addr, net.ErrClosed)
	case l.handedOver.Load():
		// The hook for upgrades: StopAccepting does nothing more than this.
		l.stopping = true
		return false, l.stopHandedOver()
	}
	l.stopping = true
	return true, nil
}

// listenError carries a message written for the operator and keeps the
// underlying error reachable for errors.Is / errors.As.
type listenError struct {
	msg string
	err error
}

func (e *listenError) Error() string { return e.msg }
func (e *listenError) Unwrap() error { return e.err }

func describeListenError(addr string, err error) error {
	var hint string
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "address already in use (another process has this port; pick another with -listen or stop it)"
	case errors.Is(err, syscall.EACCES):
		hint = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a port of 1024 or above)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "cannot assign requested address (the host part is not an address of this machine; use one of its addresses, 0.0.0.0 or [::])"
	case errors.As(err, &dnsErr):
		hint = fmt.Sprintf("cannot resolve host %q (use an IP address, or a name this machine resolves)", dnsErr.Name)
	default:
		hint = fmt.Sprintf("%v (check the address: host:port with a port from 0 to 65535)", addrErrText(err))
	}
	return &listenError{msg: fmt.Sprintf("listen %s: %s", addr, hint), err: err}
}

// addrErrText returns the innermost useful text of a net error, without the
// "listen tcp ADDR:" prefix that our own message already carries.
func addrErrText(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
