package drain

import "sync/atomic"

// How the deadline cut an exchange (Exchange.CutByDrain, and the access log's "cut" field).
const (
	CutBeforeHead  = "before_head"  // no response head had been sent: the client got nothing
	CutMidResponse = "mid_response" // the head and part of the body had been sent
	CutTunnel      = "tunnel"       // an upgraded connection (WebSocket etc.) was closed
)

const (
	cutNone int32 = iota
	cutBeforeHead
	cutMidResponse
	cutTunnel
)

var cutNames = [...]string{"", CutBeforeHead, CutMidResponse, CutTunnel}

// cuts counts what the deadline cut, by kind.
type cuts struct {
	beforeHead, midResponse, tunnels atomic.Int64
}

// markCuts marks every exchange still in flight as cut by the deadline, by what it had
// sent, and counts them. It runs once, just before the deadline closes them.
func (d *Drainer) markCuts() {
	d.t.reg.each(func(x *exchange) {
		kind, n := cutBeforeHead, &d.cuts.beforeHead
		switch {
		case x.tunnel.Load() != nil:
			kind, n = cutTunnel, &d.cuts.tunnels
		case x.headerSent.Load():
			kind, n = cutMidResponse, &d.cuts.midResponse
		}
		if x.cut.CompareAndSwap(cutNone, kind) {
			n.Add(1)
		}
	})
}
