package proxy

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// The check at hand-out (upConn.check) sees a stray response on an idle inline connection
// only when a request takes that connection, and the idle timeout only when it closes it:
// with no request coming, a misbehaving upstream's stray could wait 90 s to be counted,
// and meanwhile its other kept connections went on carrying exchanges. So a connection
// that stays in the pool is watched: a goroutine waits on the runtime's poller until its
// socket turns readable, without reading (a MSG_PEEK), and a stray found then is reported
// at once (the quarantine begins, and that connection is closed), as is a close by the
// upstream (the connection is dropped instead of being handed to a request).
//
// A connection is watched only once it has been idle for idleWatchDelay. Under load a
// connection is given back and taken again within microseconds, and a watch would cost
// each request a goroutine's start and a hand-over when it is taken; a connection that
// waits longer is taken at a rate where that costs nothing worth counting. Bytes that
// arrive during the delay are found by the watch as it starts (or by the check at
// hand-out, as before), at most idleWatchDelay late.

// idleWatchDelay is how long a connection sits in the pool before it is watched.
const idleWatchDelay = 20 * time.Millisecond

// idleWatch is the watch of one upstream connection; its fields change only while the
// connection is in the pool (on and taken under the pool's lock), or, for buf, n and
// state, in the watching goroutine.
type idleWatch struct {
	uc      *upConn
	peekFn  func(fd uintptr) bool // peek bound once, so that a watch does not allocate
	buf     [len("HTTP/1.1 408")]byte
	n       int
	state   idleState
	on      bool           // a goroutine watches the connection (watchIdle)
	taken   bool           // take took the connection while on: it waits for verdict
	verdict chan idleState // the watch's finding, for take
}

// startWatches is watchTimer's function: it starts a watch for each pooled connection
// idle for idleWatchDelay without one, and sets the timer again for the next that will be.
func (p *idlePool) startWatches() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.watchArmed = false
		return
	}
	var next time.Duration
	for _, uc := range p.idle {
		if uc.raw == nil || (uc.watch != nil && uc.watch.on) {
			continue
		}
		if wait := idleWatchDelay - now.Sub(uc.lastUsed); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		if uc.watch == nil {
			w := &idleWatch{uc: uc, verdict: make(chan idleState, 1)}
			w.peekFn = w.peek
			uc.watch = w
		}
		uc.watch.on, uc.watch.taken = true, false
		p.watchers.Add(1)
		go p.watchIdle(uc)
	}
	if next == 0 {
		p.watchArmed = false
		return
	}
	p.watchTimer.Reset(next)
}

// watchIdle watches uc until bytes or a close arrive, or take ends the watch.
func (p *idlePool) watchIdle(uc *upConn) {
	defer p.watchers.Done()
	w := uc.watch
	state := w.wait()
	p.mu.Lock()
	w.on = false
	if w.taken {
		p.mu.Unlock()
		w.verdict <- state
		return
	}
	kept := p.remove(uc)
	p.mu.Unlock()
	if !kept {
		return // reaped or closed meanwhile: closed there
	}
	uc.c.Close()
	p.watched.Add(1)
	if state == idleBytes && p.guard != nil {
		p.guard.report(strayIdle, "bytes on an idle connection, as they arrived: "+w.text())
	}
}

// wait blocks until the socket has bytes or the peer's close to read (without reading
// them), or until a read deadline (take's) or a close (the pool's) ends the wait.
func (w *idleWatch) wait() idleState {
	w.state = idleClosed
	if err := w.uc.raw.Read(w.peekFn); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return idleQuiet
		}
		return idleClosed
	}
	return w.state
}

// peek is upConn.peek for the watch: false (wait for the poller) while nothing is there.
func (w *idleWatch) peek(fd uintptr) bool {
	for {
		n, _, err := syscall.Recvfrom(int(fd), w.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			return false
		case err != nil || n <= 0:
			w.state = idleClosed
		default:
			w.n, w.state = n, idleBytes
			if is408(w.buf[:n]) {
				w.state = idleClosed
			}
		}
		return true
	}
}

// stop ends the watch of a connection take took while it was on, and returns its finding.
// The past deadline wakes the watching goroutine; once it has answered, the connection is
// take's alone, and gets its deadline cleared.
func (w *idleWatch) stop() idleState {
	uc := w.uc
	uc.c.SetReadDeadline(time.Unix(1, 0))
	state := <-w.verdict
	uc.c.SetReadDeadline(time.Time{})
	if state == idleBytes {
		uc.peekN = copy(uc.peekBuf[:], w.buf[:w.n]) // for the report (peekedText)
	}
	return state
}

func (w *idleWatch) text() string { return fmt.Sprintf("%q", w.buf[:w.n]) }

// remove takes uc out of the idle stack; false if it is not there. Under p.mu.
func (p *idlePool) remove(uc *upConn) bool {
	for i, c := range p.idle {
		if c == uc {
			n := copy(p.idle[i:], p.idle[i+1:])
			p.idle[i+n] = nil
			p.idle = p.idle[:i+n]
			return true
		}
	}
	return false
}
