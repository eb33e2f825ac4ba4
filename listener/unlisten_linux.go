//go:build linux

package listener

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Unlisten stops the socket under tcp from listening, for every descriptor of it: Linux
// turns shutdown(SHUT_RD) on a listening TCP socket into a disconnect (tcp_disconnect on
// TCP_LISTEN), so a copy held elsewhere (tableflip keeps one of every socket for the next
// upgrade, and has no way to drop it) stops queueing connections too: new connects are
// refused and the address can be bound again. Connections still in the accept queue are
// reset, so drain the listener first. Never call it on a socket systemd holds: systemd
// keeps it for the next start, and it would stay dead.
func Unlisten(tcp *net.TCPListener) error {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return fmt.Errorf("stop listening on %s: %w", tcp.Addr(), err)
	}
	var sockErr error
	if err := rc.Control(func(fd uintptr) { sockErr = unix.Shutdown(int(fd), unix.SHUT_RD) }); err != nil {
		return fmt.Errorf("stop listening on %s: %w", tcp.Addr(), err)
	}
	if sockErr != nil {
		return fmt.Errorf("stop listening on %s: shutdown: %w", tcp.Addr(), sockErr)
	}
	return nil
}

// Listening reports whether the socket under tcp listens (SO_ACCEPTCONN): a socket
// inherited from an upgrade may be one that Unlisten stopped.
func Listening(tcp *net.TCPListener) (bool, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var sockErr error
	if err := rc.Control(func(fd uintptr) { v, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN) }); err != nil {
		return false, err
	}
	if sockErr != nil {
		return false, fmt.Errorf("getsockopt SO_ACCEPTCONN: %w", sockErr)
	}
	return v == 1, nil
}
