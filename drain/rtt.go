package drain

import "time"

const (
	// fallbackRTTMargin is the idle window's margin for a connection whose round trip
	// the kernel cannot tell us (not Linux, or a connection wrapper that hides its
	// socket): a wide-area round trip plus Linux's minimum retransmission timeout.
	fallbackRTTMargin = 500 * time.Millisecond
	// minRecheck spaces the re-checks of a connection whose next request has arrived
	// but is not parsed yet.
	minRecheck = 10 * time.Millisecond
	// lastRecvSlack absorbs the kernel's millisecond (jiffy) granularity of
	// tcpi_last_data_recv.
	lastRecvSlack = 10 * time.Millisecond
)

// tcpInfo is what the idle window needs from the kernel's TCP_INFO of a connection.
type tcpInfo struct {
	ok           bool
	rtt, rttVar  time.Duration // smoothed round trip and its mean deviation
	rto          time.Duration // retransmission timeout
	lastDataRecv time.Duration // how long ago data last arrived, as of readAt
	readAt       time.Time
}

// margin is how much longer than the idle window we wait before closing an idle
// connection: one smoothed round trip plus one retransmission timeout (at least four
// deviations of the round trip, at least 200 ms). A request the client sends just before
// the window ends reaches us one round trip after our last response did, plus jitter; if
// its first segment is lost, one retransmission timeout later.
func (i tcpInfo) margin() time.Duration {
	if !i.ok {
		return fallbackRTTMargin
	}
	return i.rtt + max(i.rto, 4*i.rttVar)
}

// receivedSince reports whether the kernel saw data from the client after t.
func (i tcpInfo) receivedSince(t time.Time) bool {
	return i.readAt.Add(-i.lastDataRecv).After(t.Add(lastRecvSlack))
}
