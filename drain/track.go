package drain

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// tracker counts what a drain has to wait for: open client connections (through the
// servers' ConnState hook), requests inside the handler, and upgraded connections, which
// http.Server forgets once they are hijacked.
//
// The drain waits for the sum to reach zero. Whoever brings a count to zero wakes the
// waiter through a one-slot channel, so the wait ends the moment the last response is
// done, without polling.
type tracker struct {
	conns    atomic.Int64 // accepted connections not yet closed or hijacked
	requests atomic.Int64 // requests inside the handler, upgrades included
	upgrades atomic.Int64 // hijacked connections not yet closed

	watching atomic.Bool   // a drain waits: report zeros on wake
	wake     chan struct{} // capacity 1: a pending wake-up is never lost

	// closing is set when responses must ask clients to close their connections, and
	// idle keep-alive connections are to be closed (both from the drain request on);
	// closingSince is when (unix nanoseconds), the earliest start of any idle window.
	closing      atomic.Bool
	closingSince atomic.Int64
	idleClose    time.Duration

	// removing counts servers being removed (Drainer.Remove): their responses ask
	// clients to close too.
	removing atomic.Int32

	conn     sync.Map // net.Conn -> *connInfo, for the connections http.Server tracks
	upgraded sync.Map // *upgradedConn -> struct{}, for force-closing at the deadline

	reg registry // the requests inside the handler, for what-is-in-flight (inflight.go)

	// lastNew is when the last connection arrived after the drain began (unix
	// nanoseconds; 0: none), for drain.delay = "auto" (autodelay.go).
	lastNew atomic.Int64
}

// connInfo follows one client connection through its states.
type connInfo struct {
	state     atomic.Int32  // http.ConnState
	idleSince atomic.Int64  // unix nanoseconds of the last move to idle
	idleEpoch atomic.Uint64 // bumped on every move to idle, so a stale close is skipped
	// synRetrans: our SYN-ACK was sent more than once (set at StateNew, before any data).
	synRetrans bool
}

func newTracker(idleClose time.Duration) *tracker {
	return &tracker{wake: make(chan struct{}, 1), idleClose: idleClose}
}

// connState is the http.Server.ConnState hook. http.Server calls it on the connection's own
// goroutine, in order.
func (t *tracker) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		if t.closing.Load() {
			t.lastNew.Store(time.Now().UnixNano())
		}
		ci := &connInfo{synRetrans: readTCPInfo(c).totalRetrans > 0}
		ci.state.Store(int32(state))
		t.conn.Store(c, ci)
		t.conns.Add(1)
	case http.StateActive, http.StateIdle:
		v, ok := t.conn.Load(c)
		if !ok {
			return
		}
		ci := v.(*connInfo)
		if state == http.StateIdle {
			ci.idleSince.Store(time.Now().UnixNano())
			ci.idleEpoch.Add(1)
		}
		ci.state.Store(int32(state))
		if state == http.StateIdle && t.closing.Load() {
			t.closeWhenIdleLongEnough(c, ci, t.closingSince.Load())
		}
	case http.StateHijacked, http.StateClosed:
		if _, ok := t.conn.LoadAndDelete(c); ok {
			t.done(&t.conns)
		}
	}
}

// beginClosing starts the drain's connection handling: every response from now on asks
// its client to close the connection, and a keep-alive connection is closed once it has
// been idle for the idle window (idleClose plus a margin of its round trip, see
// closeWhenIdleLongEnough). Closing a connection the moment it turns idle would race its
// client sending the next request, and reset that request; a client that keeps sending
// instead gets its next answer with "Connection: close" and leaves by itself. A
// connection already idle now gets the whole window from now, not an instant close.
//
// Connections that have not sent a complete first request (StateNew) are left to the
// server's read-header timeout and to the grace deadline: one may be sending slowly.
func (t *tracker) beginClosing() {
	t.closingSince.Store(time.Now().UnixNano())
	t.closing.Store(true)
	t.conn.Range(func(k, v any) bool {
		ci := v.(*connInfo)
		if http.ConnState(ci.state.Load()) == http.StateIdle {
			t.closeWhenIdleLongEnough(k.(net.Conn), ci, t.closingSince.Load())
		}
		return true
	})
}

// closeWhenIdleLongEnough closes c if it is still idle when its idle window ends. The
// window starts when c turned idle (just after its last response byte was written), when
// the drain began (from: unix nanoseconds; or a removal of its listener), or when the client acknowledged that response less a round trip
// (tcpInfo.delivered: a response the link lost arrives late), whichever is latest, and
// lasts idleClose plus a margin of one round trip and one retransmission timeout
// (tcpInfo.margin): a request the client writes just inside idleClose after reading our
// last response is then already here when we would close, even if its first segment was
// lost. While part of the response is unacknowledged, or a request did arrive (the kernel
// saw data after the connection turned idle) but is not parsed yet, the close waits: the
// server turns the connection active as soon as it has read the headers.
func (t *tracker) closeWhenIdleLongEnough(c net.Conn, ci *connInfo, from int64) {
	epoch := ci.idleEpoch.Load()
	since := time.Unix(0, max(ci.idleSince.Load(), from))
	idleAt := time.Unix(0, ci.idleSince.Load())
	info := readTCPInfo(c)
	margin := info.margin(ci.synRetrans)
	var closeIfStillIdle func()
	closeIfStillIdle = func() {
		if http.ConnState(ci.state.Load()) != http.StateIdle || ci.idleEpoch.Load() != epoch {
			return
		}
		now := readTCPInfo(c)
		if now.ok && now.receivedSince(idleAt) {
			time.AfterFunc(max(margin, minRecheck), closeIfStillIdle)
			return
		}
		delivered, ok := now.delivered()
		if !ok {
			time.AfterFunc(max(now.rto, minRecheck), closeIfStillIdle)
			return
		}
		if end := delivered.Add(t.idleClose + margin); delivered.After(since.Add(lastRecvSlack)) && time.Until(end) > minRecheck {
			since = delivered
			time.AfterFunc(time.Until(end), closeIfStillIdle)
			return
		}
		c.Close() // the server's read fails and it reports StateClosed
	}
	time.AfterFunc(time.Until(since.Add(t.idleClose+margin)), closeIfStillIdle)
}

// serverClosing reports whether r came in on a server being removed.
func (t *tracker) serverClosing(r *http.Request) bool {
	if t.removing.Load() == 0 {
		return false
	}
	s, _ := r.Context().Value(serverKey{}).(*server)
	return s != nil && s.removing.Load()
}

// done decrements a count and wakes the drain if it reached zero.
func (t *tracker) done(n *atomic.Int64) {
	if n.Add(-1) == 0 && t.watching.Load() {
		select {
		case t.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

func (t *tracker) open() int64 {
	return t.conns.Load() + t.requests.Load() + t.upgrades.Load()
}

// waitIdle returns true once nothing is open, or false when stop is closed first.
func (t *tracker) waitIdle(stop <-chan struct{}) bool {
	t.watching.Store(true)
	for t.open() != 0 {
		select {
		case <-t.wake:
		case <-stop:
			return t.open() == 0
		}
	}
	return true
}

// closeUpgraded closes every upgraded connection; the deadline's last resort. One whose
// handler set a goodbye (SetGoingAway) says it first, on a goroutine of its own.
func (t *tracker) closeUpgraded() {
	t.upgraded.Range(func(k, _ any) bool {
		u := k.(*upgradedConn)
		if fn := u.goingAway.Load(); fn != nil {
			go (*fn)()
		} else {
			u.Close()
		}
		return true
	})
}

// upgradedConn is a hijacked client connection (WebSocket and other upgrades). Closing it
// is how the drain learns the upgrade is over, and how the deadline ends it.
type upgradedConn struct {
	net.Conn
	t         *tracker
	closeOnce sync.Once
	in, out   atomic.Int64 // bytes, counted apart from the exchange: a copy goroutine may outlive the handler
	// busy counts reads and writes in progress: their bytes are counted when the call
	// returns, which can be after the peer saw them and after the handler returned.
	busy atomic.Int32
	// goingAway, when set, ends the connection at the deadline instead of Close (a
	// WebSocket close frame first, see SetGoingAway).
	goingAway atomic.Pointer[func()]
}

// SetGoingAway makes the drain's deadline call fn instead of closing the connection at
// once: the proxy says goodbye in the connection's own protocol first (a WebSocket close
// frame). fn must close the connection, and return within a second.
func (u *upgradedConn) SetGoingAway(fn func()) { u.goingAway.Store(&fn) }

func (t *tracker) addUpgrade(c net.Conn) *upgradedConn {
	u := &upgradedConn{Conn: c, t: t}
	t.upgrades.Add(1)
	t.upgraded.Store(u, struct{}{})
	return u
}

func (u *upgradedConn) Read(p []byte) (int, error) {
	u.busy.Add(1)
	defer u.busy.Add(-1)
	n, err := u.Conn.Read(p)
	u.in.Add(int64(n))
	return n, err
}

func (u *upgradedConn) Write(p []byte) (int, error) {
	u.busy.Add(1)
	defer u.busy.Add(-1)
	n, err := u.Conn.Write(p)
	u.out.Add(int64(n))
	return n, err
}

// settle waits, briefly, for reads and writes still returning on the closed connection,
// so that the byte counts include them: the copy goroutine of the direction that did not
// end the connection can still be between its last write and counting it.
func (u *upgradedConn) settle() {
	for deadline := time.Now().Add(100 * time.Millisecond); u.busy.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Microsecond)
	}
}

func (u *upgradedConn) Close() error {
	err := u.Conn.Close()
	u.closeOnce.Do(func() {
		u.t.upgraded.Delete(u)
		u.t.done(&u.t.upgrades)
	})
	return err
}

// Exchange describes one finished request (or upgraded connection, when it closes), as
// handed to each Observer. Observers must not keep the pointer after Observe returns.
type Exchange struct {
	Request  *http.Request
	Start    time.Time
	Duration time.Duration
	// Status is the status sent, 101 for an upgrade, 499 when the client left before an
	// answer, 0 when the handler wrote nothing.
	Status   int
	BytesIn  int64 // request body bytes read, or bytes received on an upgraded connection
	BytesOut int64 // response body bytes written, or bytes sent on an upgraded connection
	Upgraded bool
	// UpstreamError is why the proxy answered instead of the upstream (proxy.Reason*), or "".
	UpstreamError string
	Err           error
	// CutByDrain says how the drain's deadline cut the exchange (Cut*), or "" when it did not.
	CutByDrain string
}

// Observer receives every finished exchange (access log, metrics). Observe runs on the
// request's goroutine before the drain counts the request as done: it must be quick and
// must not block.
type Observer interface {
	Observe(x *Exchange)
}

// exchange is the per-request ResponseWriter wrapper: it records status and sizes, asks
// the client to close its connection once a drain has begun, and registers hijacked
// connections with the tracker. One allocation per request.
type exchange struct {
	Exchange
	http.ResponseWriter
	t           *tracker
	wroteHeader bool
	body        countingBody
	upgraded    *upgradedConn

	// For readers of the in-flight list (inflight.go), on other goroutines.
	shard          *registryShard
	prevIn, nextIn *exchange // shard.mu
	reqID          string    // shard.mu
	proto          string    // shard.mu once registered (an upgrade renames it)
	path           string    // set before the exchange is registered
	out            atomic.Int64
	headerSent     atomic.Bool
	tunnel         atomic.Pointer[upgradedConn]
	cut            atomic.Int32 // cut* from the deadline on
}

func (x *exchange) WriteHeader(code int) {
	if x.wroteHeader {
		x.ResponseWriter.WriteHeader(code) // let net/http log the superfluous call
		return
	}
	if code >= 200 {
		x.wroteHeader = true
		x.headerSent.Store(true)
		x.Status = code
		if (x.t.closing.Load() || x.t.serverClosing(x.Request)) && x.Request.ProtoMajor == 1 {
			// The client leaves after this response instead of sending another request
			// on a connection we are about to close.
			x.ResponseWriter.Header().Set("Connection", "close")
		}
	}
	x.ResponseWriter.WriteHeader(code)
}

func (x *exchange) Write(p []byte) (int, error) {
	if !x.wroteHeader {
		x.WriteHeader(http.StatusOK)
	}
	n, err := x.ResponseWriter.Write(p)
	x.out.Add(int64(n))
	return n, err
}

// FlushError lets http.ResponseController (and so ReverseProxy's streaming) flush.
func (x *exchange) FlushError() error {
	if !x.wroteHeader {
		x.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(x.ResponseWriter).Flush()
}

// Hijack hands over the connection for an upgrade and starts tracking it.
func (x *exchange) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(x.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	x.wroteHeader = true
	x.Upgraded = true
	x.Status = http.StatusSwitchingProtocols
	x.upgraded = x.t.addUpgrade(c)
	x.tunnel.Store(x.upgraded)
	if x.shard != nil {
		proto := upgradeProtocol(x.Request)
		x.shard.mu.Lock()
		x.proto = proto
		x.shard.mu.Unlock()
	}
	return x.upgraded, brw, nil
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter for the rest.
func (x *exchange) Unwrap() http.ResponseWriter { return x.ResponseWriter }

// RecordUpstreamError implements proxy.ErrorRecorder.
func (x *exchange) RecordUpstreamError(reason string, status int, err error) {
	x.UpstreamError = reason
	x.Err = err
	if !x.wroteHeader {
		x.Status = status // kept when nothing is written (the client left)
	}
}

// finish fills in what is only known at the end of the exchange.
func (x *exchange) finish() {
	x.Duration = time.Since(x.Start)
	x.BytesIn = x.body.n.Load()
	x.BytesOut = x.out.Load()
	if u := x.upgraded; u != nil {
		u.settle()
		x.BytesIn += u.in.Load()
		x.BytesOut += u.out.Load()
	}
}

// countingBody counts the request body bytes read. The transport may still be reading the
// body on its own goroutine after the response arrived, hence the atomic.
type countingBody struct {
	io.ReadCloser
	n    atomic.Int64
	done atomic.Bool // read to its end, or closed
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil {
		b.done.Store(true)
	}
	return n, err
}

func (b *countingBody) Close() error {
	b.done.Store(true)
	return b.ReadCloser.Close()
}
