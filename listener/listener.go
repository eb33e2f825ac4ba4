// Package listener binds the public TCP listener and closes it without losing
// a connection the kernel has already accepted on our behalf.
//
// Closing a listening socket makes Linux reset every connection that finished
// its handshake but sits in the accept queue, not yet taken by accept(2).
// Clients that already sent a request on such a connection lose it.
// StopAccepting avoids that: it first stops the kernel from completing new
// handshakes on the socket, lets the server's Serve loop accept what is queued,
// and only then closes.
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

	mu       sync.Mutex
	stopping bool // StopAccepting has begun; Close and later StopAccepting calls do nothing
	closed   bool // Close has closed the socket

	handedOver atomic.Bool // another process accepts on the socket too (handover.go)
	retire     atomic.Bool // Remove: the socket stops listening for every descriptor of it
}

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
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.inner.Accept()
	if err != nil {
		l.fds.note(l.inner.Addr(), err)
	}
	return c, err
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
