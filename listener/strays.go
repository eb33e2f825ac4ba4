package listener

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// strayQueue holds connections that the kernel completed on a socket other than the
// listener's own, the reuseport diversion's sink (divert_linux.go), and that StopAccepting
// took out of it, until Accept hands them to the Serve loop like any other connection.
// Accept blocks in the socket's accept; put wakes it by moving the socket's deadline to
// now, and accept, seeing that timeout, clears the deadline and returns a stray.
type strayQueue struct {
	tcp *net.TCPListener

	mu     sync.Mutex
	conns  []net.Conn
	closed bool // closeAll ran: put closes what it gets

	woken atomic.Bool // put has moved the deadline: a timeout from accept may be ours
}

// put queues cs for Accept and wakes an Accept blocked on the socket. After closeAll it
// closes them and returns how many it closed (they were not served).
func (q *strayQueue) put(cs []net.Conn) (closed int) {
	if len(cs) == 0 {
		return 0
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		for _, c := range cs {
			c.Close()
		}
		return len(cs)
	}
	q.conns = append(q.conns, cs...)
	q.mu.Unlock()
	q.woken.Store(true)
	q.tcp.SetDeadline(time.Now()) // after the append: the woken accept finds them
	return 0
}

// take returns the next queued connection, or nil.
func (q *strayQueue) take() net.Conn {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.conns) == 0 {
		return nil
	}
	c := q.conns[0]
	q.conns[0] = nil
	q.conns = q.conns[1:]
	return c
}

// waiting is how many connections wait for Accept.
func (q *strayQueue) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.conns)
}

// closeAll closes the connections Accept has not taken and returns how many: the
// listener is closed, nothing will serve them.
func (q *strayQueue) closeAll() int {
	q.mu.Lock()
	cs := q.conns
	q.conns, q.closed = nil, true
	q.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return len(cs)
}

// accept returns a queued stray if there is one, else accepts on the socket. A timeout
// after put moved the deadline is put's wake-up: the deadline is cleared first, then the
// queue looked at again, so a put in between is not missed (its append comes before its
// deadline).
func (q *strayQueue) accept() (net.Conn, error) {
	for {
		if c := q.take(); c != nil {
			return c, nil
		}
		c, err := q.tcp.Accept()
		var ne net.Error
		if err != nil && q.woken.Load() && errors.As(err, &ne) && ne.Timeout() {
			q.tcp.SetDeadline(time.Time{})
			continue
		}
		return c, err
	}
}
