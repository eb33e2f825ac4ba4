package h2serve

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unreadBytes is how many bytes the kernel holds for c that nobody has read yet
// (SIOCINQ), or 0 when that cannot be told.
func unreadBytes(c net.Conn) int {
	sc, ok := socketOf(c)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	if err != nil {
		return 0
	}
	return n
}

// socketOf finds the socket under c, through TLS and any wrapper with a NetConn method
// (max_connections' connections expose their socket themselves).
func socketOf(c net.Conn) (syscall.Conn, bool) {
	for range 4 {
		switch x := c.(type) {
		case syscall.Conn:
			return x, true
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = x.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}
