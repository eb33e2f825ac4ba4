//go:build !linux

package listener

import (
	"net"
	"syscall"
)

// Outside Linux there is no reserve: the accept queue cannot be read, so accepting on the
// spare could block.
func openSpare() int                               { return -1 }
func closeSpare(int)                               {}
func openFilesLimit() int64                        { return 0 }
func clientQueued(syscall.RawConn) bool            { return false }
func acceptNow(*net.TCPListener) (net.Conn, error) { return nil, net.ErrClosed }
