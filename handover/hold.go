package handover

import (
	"net"
	"sync"
)

// Hold returns ln accepting nothing until release is closed: the admin socket of a
// process an upgrade started, so that probes keep reaching the process still serving
// until this one is ready. Close ends a held Accept with net.ErrClosed.
func Hold(ln net.Listener, release <-chan struct{}) net.Listener {
	return &heldListener{Listener: ln, release: release, closed: make(chan struct{})}
}

type heldListener struct {
	net.Listener
	release <-chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (l *heldListener) Accept() (net.Conn, error) {
	select {
	case <-l.release:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	return l.Listener.Accept()
}

func (l *heldListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
