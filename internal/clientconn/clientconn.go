// Package clientconn finds the client connection under a request and reads what the
// kernel knows about it (TCP_INFO): the drain's idle window reads its round trip, the
// proxy reads whether a client whose request context net/http ended is still there.
package clientconn

import (
	"context"
	"net"
	"syscall"
	"time"
)

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it keeps the connection in the context of
// every request served on it, for Of.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Of is the client connection that ConnContext kept in ctx; nil when none was.
func Of(ctx context.Context) net.Conn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	return c
}

// Socket finds the socket under c: it unwraps TLS connections (and any wrapper with a
// NetConn method) down to one that exposes its file descriptor (syscall.Conn, as
// max_connections' connections do). ok is false when none does.
func Socket(c net.Conn) (raw syscall.RawConn, ok bool) {
	for {
		switch v := c.(type) {
		case syscall.Conn:
			rc, err := v.SyscallConn()
			return rc, err == nil
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			return nil, false
		}
	}
}

// TCP states as Linux reports them in TCP_INFO (include/net/tcp_states.h).
const (
	StateEstablished = 1
	StateCloseWait   = 8
)

// Info is what TCP_INFO says about a connection, in the units callers use.
type Info struct {
	OK           bool // the kernel answered: a TCP socket on Linux
	Closed       bool // the connection is closed on our side (its descriptor is gone)
	State        uint8
	RTT, RTTVar  time.Duration // smoothed round trip and its mean deviation
	RTO          time.Duration // retransmission timeout
	LastDataRecv time.Duration // how long ago data last arrived, as of ReadAt
	LastAckRecv  time.Duration // how long ago the peer last acknowledged anything, a FIN included, as of ReadAt
	Unacked      uint32        // segments sent that the peer has not acknowledged
	TotalRetrans uint32        // segments we sent again, SYN-ACKs included
	ReadAt       time.Time
}
