package listener

import "context"

// Remove stops the listener for good, as a reload that drops its address must. It is
// StopAccepting, which drains and then stops the socket listening for every descriptor
// of it (Unlisten), so that the copy the upgrader keeps neither queues connections nobody
// accepts nor holds the port. A handed-over socket (HandOver: systemd's, or one another
// process took) is only closed: its other holder owns it.
func (l *Listener) Remove(ctx context.Context) (leftInQueue int, err error) {
	return l.StopAccepting(ctx)
}
