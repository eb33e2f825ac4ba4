package listener

import (
	"context"
	"fmt"
	"net"
)

// Bind binds addr as Listen does (plain TCP, errors that say what to fix) and returns the
// socket itself, for a caller that registers it before wrapping it (the upgrader, which
// hands sockets to the next process). Wrap it with FromTCP.
func Bind(ctx context.Context, addr string) (*net.TCPListener, error) {
	l, err := Listen(ctx, addr, 0)
	if err != nil {
		return nil, err
	}
	return l.tcp, nil
}

// FromTCP wraps a bound socket: one from Bind, one inherited from the process being
// upgraded, or one systemd passed (socket activation). maxConns is as for Listen.
func FromTCP(tcp *net.TCPListener, maxConns int) *Listener {
	l := &Listener{inner: tcp, tcp: tcp, addr: tcp.Addr().String(), reserve: newFDReserve(),
		strays: &strayQueue{tcp: tcp}}
	if maxConns > 0 {
		l.limit = newLimitListener(tcp, maxConns, l.strays)
		l.inner = l.limit
	}
	return l
}

// TCP is the socket underneath.
func (l *Listener) TCP() *net.TCPListener { return l.tcp }

// HandOver says that another process holds a copy of this socket and accepts on it, now
// or later: the process an upgrade started, or systemd, which keeps a socket-activated one
// open for the next start. From then on StopAccepting only stops this process from
// accepting, by closing its own descriptor. It attaches no SYN filter, which would act on
// the socket itself (and stay on it) and so refuse the other process's new connections,
// and does not wait for the accept queue, which is the other process's to empty. The
// socket stays open.
func (l *Listener) HandOver() { l.handedOver.Store(true) }

// stopHandedOver is StopAccepting for a listener handed over: close this descriptor.
func (l *Listener) stopHandedOver() error {
	if err := l.inner.Close(); err != nil {
		return fmt.Errorf("close handed-over listener %s: %w", l.addr, err)
	}
	return nil
}
