package listener

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fdWarnEvery is the least time between two warnings about accepting without descriptors:
// net/http retries the accept every few milliseconds, and logs it only at debug level.
const fdWarnEvery = 10 * time.Second

// fdWarner logs, at warning level and at most once per fdWarnEvery, that accept failed for
// want of file descriptors: clients then wait in the kernel's queue, and without a line
// nobody knows why.
type fdWarner struct {
	log   atomic.Pointer[hclog.Logger]
	last  atomic.Int64 // UnixNano of the last line
	quiet atomic.Int64 // failures since, not logged
}

func (w *fdWarner) note(addr net.Addr, err error) {
	if !outOfDescriptors(err) {
		return
	}
	w.warn("out of file descriptors: cannot accept new clients, who wait in the kernel's queue; raise the limit (ulimit -n, LimitNOFILE) or lower limits.max_connections",
		"address", addr.String(), "error", err.Error())
}

// noteRefused logs that a client was closed at once for want of descriptors (fdReserve).
func (w *fdWarner) noteRefused(addr net.Addr, why string, limit int64) {
	w.warn("out of file descriptors: new clients are closed at once, to keep descriptors for the upstream, health checks and the admin listener; raise the limit (ulimit -n, LimitNOFILE) or lower limits.max_connections",
		"address", addr.String(), "reason", why, "open_files_limit", limit)
}

// warn logs msg with kv, at most once per fdWarnEvery, with the count of the events not
// logged since.
func (w *fdWarner) warn(msg string, kv ...any) {
	log := w.log.Load()
	if log == nil {
		return
	}
	now := time.Now().UnixNano()
	last := w.last.Load()
	if now-last < int64(fdWarnEvery) || !w.last.CompareAndSwap(last, now) {
		w.quiet.Add(1)
		return
	}
	(*log).Warn(msg, append(kv, "failures_since_last_line", w.quiet.Swap(0)+1)...)
}

// SetLogger makes Accept warn, rate-limited, when it fails for want of file descriptors.
func (l *Listener) SetLogger(log hclog.Logger) { l.fds.log.Store(&log) }

// WarnOutOfDescriptors wraps ln so that its Accept warns on log, rate-limited, when it
// fails for want of file descriptors (for listeners other than Listener: the admin one).
func WarnOutOfDescriptors(ln net.Listener, log hclog.Logger) net.Listener {
	w := &warnListener{Listener: ln}
	w.fds.log.Store(&log)
	return w
}

type warnListener struct {
	net.Listener
	fds fdWarner
}

func (w *warnListener) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		w.fds.note(w.Addr(), err)
	}
	return c, err
}
