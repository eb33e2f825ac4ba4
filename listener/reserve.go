package listener

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// fdReserve keeps a public listener from taking the process's last file descriptors, in
// two ways (Linux; elsewhere it does nothing):
//
//   - headroom: a connection accepted on a descriptor among the top eighth of the
//     open-files limit (16 to 1,024 of them) is closed at once. Descriptors are handed out
//     lowest first, so such a number means the rest of the process (upstream connections,
//     health checks, the admin listener and its probes, log files) would be left fewer;
//     the public listeners' connections never hold those;
//   - a spare: one descriptor held for the moment accept fails for want of any (EMFILE,
//     ENFILE; the rest of the process took the headroom). It is closed, the waiting client
//     accepted on it and closed at once, and it is opened again: the client learns at
//     once, instead of waiting in the kernel's accept queue for as long as the shortage
//     lasts.
//
// A client refused either way sees its connection closed (EOF, or a reset if it had sent
// a request); the refusals are logged at warning level, rate-limited, and counted.
type fdReserve struct {
	mu    sync.Mutex
	spare int // the spare descriptor; -1 while none is held
	done  bool

	limit   atomic.Int64 // the soft RLIMIT_NOFILE, read at start and at each refusal
	refused atomic.Int64 // clients closed at once by either way
}

// headroomOf is how many of the top descriptors under limit public connections leave to
// the rest of the process.
func headroomOf(limit int64) int64 { return min(max(limit/8, 16), 1024) }

func newFDReserve() *fdReserve {
	r := &fdReserve{spare: openSpare()}
	r.limit.Store(openFilesLimit())
	return r
}

// outOfDescriptors reports whether err is accept's failure for want of a descriptor.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// overHeadroom reports whether c holds a descriptor in the headroom: close it.
func (r *fdReserve) overHeadroom(c net.Conn) bool {
	fd := fdOf(c)
	if fd < 0 {
		return false
	}
	limit := r.limit.Load()
	if limit <= 0 || int64(fd) < limit-headroomOf(limit) {
		return false
	}
	// Read the limit again (it may have been raised since, with prlimit): this is the
	// rare path.
	limit = openFilesLimit()
	r.limit.Store(limit)
	return limit > 0 && int64(fd) >= limit-headroomOf(limit)
}

// refuseWaiting is called when accept on tcp failed for want of a descriptor: with the
// spare it accepts a client waiting in the queue and closes it at once. It reports
// whether it did; false (no spare, no client waiting) leaves the caller to back off.
func (r *fdReserve) refuseWaiting(tcp *net.TCPListener) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	if r.spare < 0 {
		r.spare = openSpare() // lost at the last refusal: try to get it back
		return false
	}
	rc, err := tcp.SyscallConn()
	if err != nil || !clientQueued(rc) {
		return false
	}
	closeSpare(r.spare)
	r.spare = -1
	c, err := acceptNow(tcp)
	if err == nil {
		c.Close()
		r.refused.Add(1)
	}
	r.spare = openSpare() // -1 if another goroutine took the descriptor first
	return err == nil
}

// release gives the spare back: the listener is closed.
func (r *fdReserve) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	if r.spare >= 0 {
		closeSpare(r.spare)
		r.spare = -1
	}
}

// fdOf is the descriptor under c, or -1.
func fdOf(c net.Conn) int {
	if lc, ok := c.(*limitedConn); ok {
		c = lc.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
