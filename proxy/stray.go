package proxy

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// An upstream that sends a response nobody asked for (a second response after the first, a
// body after a 204 or on a HEAD, a response to a request it imagined) can poison a kept
// connection: if the next request goes out on it before the stray bytes arrive, that
// request reads them as its answer, and its own answer in turn waits for the request after.
// Checks made when a connection is handed out cannot see bytes that have not come yet. So
// every sign of such an upstream is counted and puts it in quarantine: for a while, each of
// its connections carries one exchange and is closed, and no exchange that starts then can
// read another's response. What is in flight when the first sign is seen may still be
// wrong; Options.DisableKeepAlives is the full guarantee.

// Cases of upstream protocol errors, the label of drainproxy_upstream_protocol_errors_total.
const (
	// StrayIdle: bytes arrived on a pooled connection while no request was on it.
	StrayIdle = "idle"
	// StrayEarly: a response started before the request was fully written on a reused
	// connection (the request had no Expect: 100-continue).
	StrayEarly = "early"
	// StrayUnrequested: bytes followed a complete response (in the same read): a
	// response to a request that was never sent, or a body where none may be.
	StrayUnrequested = "unrequested"
)

// StrayCases lists the cases, in the order ProtocolErrors.Counts returns them.
var StrayCases = [...]string{StrayIdle, StrayEarly, StrayUnrequested}

const (
	strayIdle = iota
	strayEarly
	strayUnrequested
)

// DefaultStrayQuarantine is how long an upstream that sent a stray response gets no
// connection reused (Options.StrayQuarantine's zero value).
const DefaultStrayQuarantine = 30 * time.Second

// ProtocolErrors counts upstream protocol errors by case. One value may be shared by the
// proxies a reload builds (Options.ProtocolErrors), so that the counts outlive them.
type ProtocolErrors struct {
	n     [len(StrayCases)]atomic.Uint64
	first atomic.Int64 // UnixNano of the first one, 0 before
}

// Counts returns the counts in the order of StrayCases.
func (e *ProtocolErrors) Counts() [len(StrayCases)]uint64 {
	var c [len(StrayCases)]uint64
	for i := range c {
		c[i] = e.n[i].Load()
	}
	return c
}

// First is when the first protocol error was seen (zero before any).
func (e *ProtocolErrors) First() time.Time {
	if n := e.first.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (e *ProtocolErrors) add(c int, now time.Time) {
	e.first.CompareAndSwap(0, now.UnixNano())
	e.n[c].Add(1)
}

// strayGuard is one backend's quarantine.
type strayGuard struct {
	counts *ProtocolErrors
	log    hclog.Logger
	target string
	period time.Duration
	until  atomic.Int64 // UnixNano the quarantine ends; 0 never began
	// closing counts CloseIdleConnections calls under way (guardedConn.Close).
	closing atomic.Int32
	// Strays seen where report could not run (deferReport), by case; anyPending is set
	// when one is.
	pending    [len(StrayCases)]atomic.Uint32
	anyPending atomic.Bool
	// closeIdle closes the idle connections of both paths when a quarantine begins;
	// set once by newInlineTransport.
	closeIdle func()
}

// quarantined reports whether connections must not be reused now. Before any stray it is
// one atomic load.
func (g *strayGuard) quarantined() bool {
	until := g.until.Load()
	return until != 0 && time.Now().UnixNano() < until
}

// report counts a stray of case c and begins (or extends) the quarantine. The first
// report of a quarantine logs one error line; later ones, at debug level.
func (g *strayGuard) report(c int, detail string) {
	now := time.Now()
	end := now.Add(g.period).UnixNano()
	var was int64
	for {
		was = g.until.Load()
		if was >= end || g.until.CompareAndSwap(was, end) {
			break
		}
	}
	began := was <= now.UnixNano()
	if began && g.closeIdle != nil {
		// After the new end is stored: a connection given back from now on is closed,
		// and those already idle are closed here.
		g.closeIdle()
	}
	// Counted last: an exchange that starts after ProtocolErrors.First finds the
	// quarantine in force and no connection to reuse.
	g.counts.add(c, time.Now())
	if !began {
		g.log.Debug("upstream sent a stray response during its quarantine", "upstream", g.target,
			"case", StrayCases[c], "detail", detail)
		return
	}
	g.log.Error("upstream sent bytes no request asked for; its connections carry one exchange each for the quarantine",
		"upstream", g.target, "case", StrayCases[c], "detail", detail, "quarantine", g.period.String())
}

// deferReport notes a stray of case c for the next request to report: for callers that
// hold a lock report's CloseIdleConnections would take.
func (g *strayGuard) deferReport(c int) {
	g.pending[c].Add(1)
	g.anyPending.Store(true)
}

// flushPending reports the strays deferReport noted; one atomic load when there are none.
func (g *strayGuard) flushPending() {
	if !g.anyPending.Load() || !g.anyPending.CompareAndSwap(true, false) {
		return
	}
	detail := [len(StrayCases)]string{
		strayIdle:        "bytes on an idle connection, found as it was closed",
		strayUnrequested: "bytes after a complete response, found in the Transport's buffer",
	}
	for c := range StrayCases {
		for n := g.pending[c].Swap(0); n > 0; n-- {
			g.report(c, detail[c])
		}
	}
}

// closingIdle runs close, which closes idle connections of the Transport path: a closed
// idle connection is then not taken for one whose read loop found a stray.
func (g *strayGuard) closingIdle(close func()) {
	g.closing.Add(1)
	defer g.closing.Add(-1)
	close()
}
