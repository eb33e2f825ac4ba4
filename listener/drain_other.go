//go:build !linux

package listener

import (
	"context"
	"fmt"
)

// StopAccepting closes the listener. Only Linux gets the drain (a SYN filter
// and a wait for the accept queue); elsewhere connections still queued in the
// kernel may be reset. Only the first call does anything; later calls return
// (0, nil), and Close is a no-op from the moment StopAccepting starts.
func (l *Listener) StopAccepting(ctx context.Context) (leftInQueue int, err error) {
	if ok, err := l.beginStop(); !ok {
		return 0, err
	}
	l.setMethod(MethodClose, "only Linux drains the accept queue")
	if err := l.inner.Close(); err != nil {
		return 0, fmt.Errorf("close listener %s: %w", l.addr, err)
	}
	return 0, nil
}
