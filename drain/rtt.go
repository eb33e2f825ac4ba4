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
	// synFallbackRTO is the retransmission timeout Linux (and RFC 6298 section 5.7)
	// falls back to when a connection's SYN or SYN-ACK had to be sent again: a client
	// whose handshake lost a segment may take this long to resend a lost request.
	synFallbackRTO = 3 * time.Second
)

// tcpInfo is what the idle window needs from the kernel's TCP_INFO of a connection.
type tcpInfo struct {
	ok           bool
	rtt, rttVar  time.Duration // smoothed round trip and its mean deviation
	rto          time.Duration // retransmission timeout
	lastDataRecv time.Duration // how long ago data last arrived, as of readAt
	lastAckRecv  time.Duration // how long ago the client last acknowledged data, as of readAt
	unacked      uint32        // segments sent that the client has not acknowledged
	totalRetrans uint32        // segments we sent again, SYN-ACKs included
	readAt       time.Time
}

// margin is how much longer than the idle window we wait before closing an idle
// connection: one smoothed round trip plus one retransmission timeout (at least four
// deviations of the round trip, at least 200 ms). A request the client sends just before
// the window ends reaches us one round trip after our last response did, plus jitter; if
// its first segment is lost, one retransmission timeout later.
//
// A connection whose handshake was retransmitted (synRetrans) gets Linux's fallback
// timeout instead: such a client's own timeout can stay near 3 s, and in the 5%-loss
// runs a request it sent just before our close was resent only after 1.5-2.2 s.
func (i tcpInfo) margin(synRetrans bool) time.Duration {
	if !i.ok {
		return fallbackRTTMargin
	}
	if synRetrans {
		return i.rtt + max(i.rto, synFallbackRTO)
	}
	return i.rtt + max(i.rto, 4*i.rttVar)
}

// receivedSince reports whether the kernel saw data from the client after t.
func (i tcpInfo) receivedSince(t time.Time) bool {
	return i.readAt.Add(-i.lastDataRecv).After(t.Add(lastRecvSlack))
}

// delivered is the earliest time the idle window may count from, as far as the client
// is concerned: about when it read our last response. The window is measured from our
// write of it and its margin allows one round trip for the response to arrive and the
// request to come back; a response the link lost and we retransmitted (at 1% loss,
// several times, with the timeout doubling each time) reaches the client later, so the
// window moves with its acknowledgement, which comes back a round trip after our send
// that got through. ok is false while part of the response is still unacknowledged:
// the client may not have it yet, and its window has not begun.
func (i tcpInfo) delivered() (at time.Time, ok bool) {
	if !i.ok {
		return time.Time{}, true
	}
	if i.unacked > 0 {
		return time.Time{}, false
	}
	return i.readAt.Add(-i.lastAckRecv - i.rtt), true
}
