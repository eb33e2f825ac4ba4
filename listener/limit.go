package listener

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// roomPollInterval is how often a full listener with idle keep-alive connections checks
// whether a new client waits in the accept queue. The kernel gives no event for that
// on a socket Accept is not called on, so this is a short poll, and only while full.
const roomPollInterval = 5 * time.Millisecond

// limitListener caps the connections accepted and not yet closed. When the cap is
// reached and a new client waits in the kernel's accept queue, it closes the keep-alive
// connection that has been idle longest to make room, as nginx reuses its keep-alive
// connections when it runs out of them; connections with a request in progress (or not
// yet past their first request, or upgraded) are never closed for that. Without an idle
// one, Accept waits until a connection closes or turns idle.
//
// It learns each connection's state from http.Server.ConnState through
// Listener.ConnState; a connection it hears nothing about counts as busy.
type limitListener struct {
	*net.TCPListener
	rc     syscall.RawConn // for the accept-queue length
	max    int
	strays *strayQueue // connections taken from the reuseport sink, accepted first

	mu    sync.Mutex
	open  int                       // accepted and not closed; at most max
	conns map[*limitedConn]struct{} // the open ones, to find the oldest idle

	waiting   atomic.Bool   // Accept waits for room: wake it on a close or a move to idle
	wake      chan struct{} // capacity 1
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	reclaimed atomic.Int64 // idle connections closed to make room
}

func newLimitListener(tcp *net.TCPListener, max int, strays *strayQueue) *limitListener {
	rc, _ := tcp.SyscallConn() // fails only on a closed listener; clientsWaiting then says yes
	return &limitListener{TCPListener: tcp, rc: rc, max: max, strays: strays,
		conns: make(map[*limitedConn]struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Accept waits for room under the cap, making it from an idle connection when a client
// waits, then accepts. It returns net.ErrClosed once Close was called.
func (l *limitListener) Accept() (net.Conn, error) {
	if err := l.acquire(); err != nil {
		return nil, err
	}
	c, err := l.strays.accept()
	if err != nil {
		l.release()
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc, nil
}

// acquire takes a slot, waiting for one when the listener is full.
func (l *limitListener) acquire() error {
	defer l.waiting.Store(false)
	for {
		l.mu.Lock()
		if l.open < l.max {
			l.open++
			l.mu.Unlock()
			return nil
		}
		// Set under the lock that release takes, and before looking for an idle
		// connection: a close or a move to idle from now on wakes us.
		l.waiting.Store(true)
		l.mu.Unlock()

		// Look for an idle connection only when a client waits: the scan is O(open).
		waiting, victim := l.strays.waiting() > 0 || clientsWaiting(l.rc), (*limitedConn)(nil)
		if waiting {
			l.mu.Lock()
			victim = l.oldestIdleLocked()
			l.mu.Unlock()
			if victim != nil && victim.reclaim() {
				l.reclaimed.Add(1)
				continue // its slot is free now
			}
		}
		// A client waiting with no idle connection to take is woken by the next close or
		// move to idle; otherwise look at the queue again shortly.
		if err := l.waitForRoom(!waiting || victim != nil); err != nil {
			return err
		}
	}
}

// waitForRoom waits for a connection to close or turn idle, or, when poll is set, for the
// next look at the accept queue.
func (l *limitListener) waitForRoom(poll bool) error {
	var tick <-chan time.Time
	if poll {
		t := time.NewTimer(roomPollInterval)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-l.wake:
	case <-tick:
	case <-l.done:
		return net.ErrClosed
	}
	return nil
}

// oldestIdleLocked returns the connection idle longest, or nil when none is idle: an
// HTTP/1 keep-alive connection between requests, or a multiplexed (HTTP/2) one with no
// stream open. A linear scan: it runs only when the listener is full.
func (l *limitListener) oldestIdleLocked() *limitedConn {
	var oldest *limitedConn
	var since int64
	for c := range l.conns {
		var s int64
		if m := c.mux.Load(); m != nil {
			at, idle := (*m).IdleSince()
			if !idle || c.state.Load() == stateReclaimed {
				continue
			}
			s = at.UnixNano()
		} else if c.state.Load() == stateIdle {
			s = c.idleSince.Load()
		} else {
			continue
		}
		if oldest == nil || s < since {
			oldest, since = c, s
		}
	}
	return oldest
}

// Multiplexed is a connection that serves many requests at once (HTTP/2, package
// h2serve), whose idleness net/http's ConnState does not report: the limit asks the
// connection itself.
type Multiplexed interface {
	// IdleSince is when the connection's last stream ended (or it opened), and whether it
	// has no stream open now.
	IdleSince() (time.Time, bool)
	// Reclaim tells the client to go away (GOAWAY) and closes the connection, if it is
	// still idle; it reports whether it did.
	Reclaim() bool
}

// AttachMultiplexed tells the connection limit of the listener that accepted c (found
// through NetConn, as ConnState does) that m serves it, so that m counts as idle while
// it has no stream open and may be reclaimed then. It returns what m calls when its last
// stream ends, to wake an Accept waiting for room; a connection from a listener without
// a limit gets a no-op.
func AttachMultiplexed(c net.Conn, m Multiplexed) (idle func()) {
	for c != nil {
		if lc, ok := c.(*limitedConn); ok {
			lc.mux.Store(&m)
			return lc.l.signal
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return func() {}
}

func (l *limitListener) release() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
	l.signal()
}

// signal wakes an Accept that waits for room.
func (l *limitListener) signal() {
	if l.waiting.Load() {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// Close closes the socket and ends an Accept waiting for room.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.TCPListener.Close()
}

// Connection states as limitedConn keeps them.
const (
	stateBusy      int32 = iota // new, active, hijacked, or unknown: never closed for room
	stateIdle                   // between requests on a keep-alive connection
	stateReclaimed              // closed to make room
)

// limitedConn is an accepted connection holding one slot until it is closed.
type limitedConn struct {
	net.Conn
	l         *limitListener
	state     atomic.Int32
	idleSince atomic.Int64 // unix nanoseconds of the last move to idle
	closeOnce sync.Once
	mux       atomic.Pointer[Multiplexed] // set when HTTP/2 serves it (AttachMultiplexed)
}

// Read marks the connection busy as soon as bytes of a next request arrive, before the
// server has parsed them and reported StateActive, so that they are not lost to a close
// that makes room.
func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.state.Load() == stateIdle {
		c.state.CompareAndSwap(stateIdle, stateBusy)
	}
	return n, err
}

// reclaim closes an idle connection to make room; false if it stopped being idle first
// or has bytes of a next request waiting in the kernel.
func (c *limitedConn) reclaim() bool {
	if pendingInput(c.Conn) {
		return false
	}
	if m := c.mux.Load(); m != nil {
		prev := c.state.Load()
		if prev == stateReclaimed || !c.state.CompareAndSwap(prev, stateReclaimed) {
			return false
		}
		if !(*m).Reclaim() {
			c.state.Store(prev)
			return false
		}
		return true
	}
	if !c.state.CompareAndSwap(stateIdle, stateReclaimed) {
		return false
	}
	c.Close() // the server's read fails and it lets the connection go
	return true
}

// Close closes the connection and frees its slot.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		l := c.l
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		l.release()
	})
	return err
}

// NetConn returns the TCP connection underneath, as tls.Conn.NetConn does.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

// SyscallConn reaches the socket (for TCP_INFO and the like) through the wrapper.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// setState follows http.Server.ConnState.
func (c *limitedConn) setState(s http.ConnState) {
	switch s {
	case http.StateIdle:
		c.idleSince.Store(time.Now().UnixNano())
		if c.state.CompareAndSwap(stateBusy, stateIdle) {
			c.l.signal() // an Accept waiting for room may take this one
		}
	case http.StateActive, http.StateHijacked:
		c.state.CompareAndSwap(stateIdle, stateBusy)
	case http.StateClosed:
		c.Close() // frees the slot even if the server closed the socket underneath
	}
}

// ConnState is for http.Server.ConnState (Drainer.AddServer keeps a hook set before it):
// it tells the connection limit which connections sit idle between requests, so that a
// full listener can close the one idle longest to make room for a new client. Without it
// no connection is ever closed for room, and a full listener waits for one to close.
func (l *Listener) ConnState(c net.Conn, s http.ConnState) {
	for c != nil {
		if lc, ok := c.(*limitedConn); ok {
			lc.setState(s)
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn }) // *tls.Conn
		if !ok {
			return
		}
		c = u.NetConn()
	}
}

// Reclaimed is how many idle keep-alive connections were closed to make room under
// max_connections.
func (l *Listener) Reclaimed() int64 {
	if l.limit == nil {
		return 0
	}
	return l.limit.reclaimed.Load()
}
