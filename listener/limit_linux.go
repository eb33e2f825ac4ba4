//go:build linux

package listener

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// clientsWaiting reports whether a connection waits in the accept queue. When the
// queue cannot be read it says yes: making room is the safe side for a new client.
func clientsWaiting(rc syscall.RawConn) bool {
	if rc == nil {
		return true
	}
	n, err := acceptQueueLen(rc)
	return err != nil || n > 0
}

// pendingInput reports whether bytes (the next request) wait unread on c's socket.
func pendingInput(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}
