package listener

import "time"

// DefaultHandshakeWait bounds how long StopAccepting waits for handshakes that are half
// done (SYN-ACK sent, the client's final ACK not yet here) when nothing else is set. A
// client's ACK normally arrives one round trip after our SYN-ACK; 2s also covers one lost
// SYN-ACK, which Linux sends again after 1s, on a path of up to about a second.
const DefaultHandshakeWait = 2 * time.Second

// SetHandshakeWait bounds how long StopAccepting waits, before closing, for handshakes
// that are half done; 0 does not wait for them (they are reset at close, as a plain close
// does). Without a call the bound is DefaultHandshakeWait. The wait ends as soon as none
// is left, so the bound only matters when clients leave handshakes unfinished (a client
// that vanished, a SYN flood). Call before StopAccepting.
func (l *Listener) SetHandshakeWait(d time.Duration) {
	if d <= 0 {
		d = -1 // stored as "set to zero"; the zero value means unset
	}
	l.handshakeWaitNs.Store(int64(d))
}

func (l *Listener) handshakeWait() time.Duration {
	switch d := time.Duration(l.handshakeWaitNs.Load()); {
	case d == 0:
		return DefaultHandshakeWait
	case d < 0:
		return 0
	default:
		return d
	}
}
