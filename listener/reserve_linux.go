//go:build linux

package listener

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// openSpare opens the spare descriptor: an eventfd, which needs no file system (our
// image has none to speak of). -1 when the process has no descriptor to spare.
func openSpare() int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return -1
	}
	return fd
}

func closeSpare(fd int) { unix.Close(fd) }

// openFilesLimit is the soft limit on open files (0 when unknown).
func openFilesLimit() int64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<40 {
		return 0
	}
	return int64(lim.Cur)
}

// clientQueued reports whether a connection waits in the accept queue (no: when it
// cannot be read, so as not to block on an empty queue).
func clientQueued(rc syscall.RawConn) bool {
	n, err := acceptQueueLen(rc)
	return err == nil && n > 0
}

// acceptNow accepts a connection already queued on tcp, without blocking on an empty
// queue: the client may have given up since clientQueued looked.
func acceptNow(tcp *net.TCPListener) (net.Conn, error) {
	tcp.SetDeadline(time.Now().Add(50 * time.Millisecond))
	defer tcp.SetDeadline(time.Time{})
	return tcp.Accept()
}
