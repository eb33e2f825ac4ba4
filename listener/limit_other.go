//go:build !linux

package listener

import (
	"net"
	"syscall"
)

// clientsWaiting cannot read the accept queue outside Linux, so a full listener makes
// room as soon as a connection is idle.
func clientsWaiting(syscall.RawConn) bool { return true }

// pendingInput is not known outside Linux.
func pendingInput(net.Conn) bool { return false }
