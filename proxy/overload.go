package proxy

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Overload caps the requests in flight to the upstream across every client connection
// and protocol, as Envoy's circuit breakers (max_requests, 1024 by default there) and
// HAProxy's server maxconn with its queue do: past the cap a request waits briefly for a
// slot, then is answered 503 with Retry-After (gRPC: UNAVAILABLE) without reaching the
// upstream. Without it one HTTP/2 peer multiplies streams into upstream connections
// until the process runs out of descriptors and memory.
//
// The queue is bounded too, as Envoy's max_pending_requests (1024 by default there): at
// most as many requests wait as the cap lets in flight. A request that finds the queue
// full takes the place of the newest waiter of the connection with the most waiting, when
// that one has at least two more waiting than its own connection (that waiter is refused
// at once); otherwise it is refused at once itself. Without the bound, each stream a peer
// opens past the cap waits out the queue timeout with its request, buffers and goroutine,
// and 80 HTTP/2 connections of 100 streams held 7,000 of them.
//
// Three rules keep one peer from holding every slot:
//
//   - a freed slot goes to the waiter whose client connection holds the fewest slots
//     (oldest first among equals), so a light client is not queued behind a heavy one;
//   - a full queue refuses the connection with the most waiting first (above);
//   - while a connection holding less than half its fair share (the cap divided among the
//     connections that hold slots) waits, a request of the connection holding the most
//     slots, above its fair share, that has been blocked writing to its client (no send
//     window, a full socket) for longer than stallShed is cut: a client that stops reading
//     is shed first, a slow one that reads is not.
//
// Upgrade requests (WebSocket) are not counted: each holds a client connection of its
// own, which limits.max_connections bounds. Connections are told apart by RemoteAddr.
//
// The zero value is not usable; NewOverload. Every method is safe from any goroutine.
type Overload struct {
	mu       sync.Mutex
	max      int
	wait     time.Duration
	inflight int
	conns    map[string]*connShare
	waiters  []*waiter // FIFO; grant picks by connShare.held
	shedding int       // slots cut (stall) and not released yet
	lastScan time.Time // of shedLocked

	rejected atomic.Uint64
	shed     atomic.Uint64
}

// stallShed is how long a request must have been blocked writing to its client before a
// waiter may have it cut; queueTick is how often a waiter looks for such a request.
const (
	stallShed   = 250 * time.Millisecond
	queueTick   = 50 * time.Millisecond
	maxShedScan = 64
)

// DefaultMaxRequests is the default cap of NewOverload, Envoy's.
const DefaultMaxRequests = 1024

// DefaultQueueTimeout is how long a request waits for a slot by default.
const DefaultQueueTimeout = time.Second

type connShare struct {
	key     string
	held    int
	waiting int // its requests in o.waiters
	holders map[*overloadSlot]struct{}
}

// overloadSlot is one request's hold on the cap.
type overloadSlot struct {
	o      *Overload
	share  *connShare
	w      *progressWriter // nil: not sheddable (no progress timeouts)
	cut    bool            // shed by a waiter
	queued time.Duration   // time spent waiting for the slot
}

type waiter struct {
	share   *connShare
	granted chan struct{} // closed when the slot is handed over, or when refused
	done    bool          // granted, refused, or gave up (under o.mu)
	refused bool          // its place in a full queue went to a lighter connection's request
}

// NewOverload returns a cap of max requests in flight (max <= 0: DefaultMaxRequests),
// each waiting up to wait for a slot (wait <= 0: DefaultQueueTimeout).
func NewOverload(max int, wait time.Duration) *Overload {
	o := &Overload{conns: make(map[string]*connShare)}
	o.Set(max, wait)
	return o
}

// Set changes the cap and the queue wait (a configuration reload); requests in flight keep
// their slots.
func (o *Overload) Set(max int, wait time.Duration) {
	if max <= 0 {
		max = DefaultMaxRequests
	}
	if wait <= 0 {
		wait = DefaultQueueTimeout
	}
	o.mu.Lock()
	o.max, o.wait = max, wait
	for o.inflight < o.max && len(o.waiters) > 0 {
		o.grantLocked()
	}
	o.mu.Unlock()
}

// Rejected is how many requests were answered 503 because no slot freed in time.
func (o *Overload) Rejected() uint64 { return o.rejected.Load() }

// Shed is how many requests blocked on their client were cut to make room.
func (o *Overload) Shed() uint64 { return o.shed.Load() }

// Inflight is how many requests hold a slot now, and how many wait for one.
func (o *Overload) Inflight() (inflight, waiting int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.inflight, len(o.waiters)
}

// acquire takes a slot for a request from the client connection key, waiting up to the
// queue timeout; nil when none freed in time or done closed first. w, when not nil, is the
// request's writer, through which a waiter may cut it while it is blocked on its client.
func (o *Overload) acquire(key string, w *progressWriter, done <-chan struct{}) *overloadSlot {
	o.mu.Lock()
	share := o.conns[key]
	if share == nil {
		share = &connShare{key: key, holders: make(map[*overloadSlot]struct{})}
		o.conns[key] = share
	}
	if o.inflight < o.max && len(o.waiters) == 0 {
		s := o.holdLocked(share, w)
		o.mu.Unlock()
		return s
	}
	if len(o.waiters) >= o.max && !o.evictLocked(share) {
		o.forgetLocked(share)
		o.mu.Unlock()
		o.rejected.Add(1)
		return nil
	}
	wt := &waiter{share: share, granted: make(chan struct{})}
	o.waiters = append(o.waiters, wt)
	share.waiting++
	wait := o.wait
	o.shedLocked()
	o.mu.Unlock()

	start := time.Now()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	tick := time.NewTicker(queueTick)
	defer tick.Stop()
	for {
		select {
		case <-wt.granted:
			if wt.refused { // set before granted was closed
				o.rejected.Add(1)
				return nil
			}
			return o.grantedSlot(share, w, start)
		case <-tick.C:
			o.mu.Lock()
			if !wt.done {
				o.shedLocked()
			}
			o.mu.Unlock()
			continue
		case <-timeout.C:
		case <-done:
		}
		o.mu.Lock()
		if wt.done && !wt.refused { // granted as we gave up: the slot is ours
			o.mu.Unlock()
			return o.grantedSlot(share, w, start)
		}
		if wt.refused {
			o.mu.Unlock()
			o.rejected.Add(1)
			return nil
		}
		wt.done = true
		o.removeWaiterLocked(wt)
		o.forgetLocked(share)
		o.mu.Unlock()
		o.rejected.Add(1)
		return nil
	}
}

func (o *Overload) grantedSlot(share *connShare, w *progressWriter, start time.Time) *overloadSlot {
	o.mu.Lock()
	s := &overloadSlot{o: o, share: share, w: w, queued: time.Since(start)}
	share.holders[s] = struct{}{} // held and inflight were counted by grantLocked
	o.mu.Unlock()
	return s
}

func (o *Overload) holdLocked(share *connShare, w *progressWriter) *overloadSlot {
	o.inflight++
	share.held++
	s := &overloadSlot{o: o, share: share, w: w}
	share.holders[s] = struct{}{}
	return s
}

// release gives the slot back, to the waiter that should have it if any.
func (s *overloadSlot) release() {
	o := s.o
	o.mu.Lock()
	delete(s.share.holders, s)
	s.share.held--
	o.inflight--
	if s.cut {
		o.shedding--
	}
	o.forgetLocked(s.share)
	for o.inflight < o.max && len(o.waiters) > 0 {
		o.grantLocked()
	}
	o.mu.Unlock()
}

// grantLocked hands a free slot to the waiter whose connection holds the fewest slots.
func (o *Overload) grantLocked() {
	best := 0
	for i, wt := range o.waiters[1:] {
		if wt.share.held < o.waiters[best].share.held {
			best = i + 1
		}
	}
	wt := o.waiters[best]
	o.waiters = append(o.waiters[:best], o.waiters[best+1:]...)
	wt.share.waiting--
	wt.done = true
	o.inflight++
	wt.share.held++
	close(wt.granted)
}

func (o *Overload) removeWaiterLocked(wt *waiter) {
	for i, x := range o.waiters {
		if x == wt {
			o.waiters = append(o.waiters[:i], o.waiters[i+1:]...)
			wt.share.waiting--
			return
		}
	}
}

// evictLocked makes room in the full queue for a request of share: it refuses the newest
// waiter of the connection with the most waiting, if that one would still have more than
// share once the request joins. False otherwise (HTTP/1 clients, one request each, never
// take each other's places): the newcomer is the one to refuse.
func (o *Overload) evictLocked(share *connShare) bool {
	victim := -1
	for i, wt := range o.waiters {
		if wt.share.waiting > share.waiting+1 && (victim < 0 || wt.share.waiting >= o.waiters[victim].share.waiting) {
			victim = i
		}
	}
	if victim < 0 {
		return false
	}
	wt := o.waiters[victim]
	o.waiters = append(o.waiters[:victim], o.waiters[victim+1:]...)
	wt.share.waiting--
	wt.done, wt.refused = true, true
	close(wt.granted)
	o.forgetLocked(wt.share)
	return true
}

// forgetLocked drops the record of a connection that holds and awaits nothing.
func (o *Overload) forgetLocked(share *connShare) {
	if share.held > 0 || share.waiting > 0 {
		return
	}
	delete(o.conns, share.key)
}

// shedLocked cuts requests blocked on their client for longer than stallShed, on behalf
// of waiters whose connection holds less than half its fair share (the cap divided among the
// connections holding slots): one per such waiter that has no cut on its way yet, at most
// maxShedScan per call and a scan at most every queueTick/5, each from the connection
// holding the most slots, when that one holds more than the fair share. Waiters of heavy
// connections shed nothing: they wait for what frees, and are refused in time.
func (o *Overload) shedLocked() {
	now := time.Now()
	if now.Sub(o.lastScan) < queueTick/5 {
		return
	}
	o.lastScan = now
	holding := 0
	for _, c := range o.conns {
		if c.held > 0 {
			holding++
		}
	}
	fair := o.max / max(holding, 1)
	light := 0
	for _, wt := range o.waiters {
		if wt.share.held < fair/2 {
			light++
		}
	}
	for range min(light, maxShedScan) {
		if o.shedding >= light {
			return
		}
		var heaviest *connShare
		var victim *overloadSlot
		for _, c := range o.conns {
			if c.held <= fair || (heaviest != nil && c.held <= heaviest.held) {
				continue
			}
			if s := stalledIn(c, now); s != nil {
				heaviest, victim = c, s
			}
		}
		if victim == nil {
			return
		}
		victim.cut = true
		o.shedding++
		o.shed.Add(1)
		victim.w.shed()
	}
}

// stalledIn is a request of c blocked writing to its client for longer than stallShed.
func stalledIn(c *connShare, now time.Time) *overloadSlot {
	for s := range c.holders {
		if s.w == nil || s.cut {
			continue
		}
		if since := s.w.writing.Load(); since != 0 && now.UnixNano()-since > int64(stallShed) {
			return s
		}
	}
	return nil
}

var errOverloaded = errors.New("no slot under the cap on requests in flight to the upstream (upstream.max_requests) within upstream.queue_timeout")

// isUpgrade reports whether r asks for an HTTP/1.1 upgrade (WebSocket), which Overload
// does not count.
func isUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Header.Get("Upgrade") != ""
}

// overloadLogEvery is the least time between two warnings about requests refused under
// the cap: an overload refuses thousands a second, and the metric counts each.
const overloadLogEvery = 10 * time.Second

// logOverloaded warns about a request refused under the cap, at most once per
// overloadLogEvery, with the count of those not logged since.
func (p *Proxy) logOverloaded(r *http.Request) {
	now := time.Now().UnixNano()
	last := p.overloadLogged.Load()
	if now-last < int64(overloadLogEvery) || !p.overloadLogged.CompareAndSwap(last, now) {
		p.overloadQuiet.Add(1)
		return
	}
	o := p.opts.Overload
	inflight, waiting := o.Inflight()
	p.log.Warn("too many requests in flight to the upstream; answered 503", "max_requests", o.Max(),
		"inflight", inflight, "waiting", waiting, "refused_since_last_line", p.overloadQuiet.Swap(0)+1,
		"method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
}

// Max is the cap in force.
func (o *Overload) Max() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.max
}
