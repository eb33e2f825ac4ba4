//go:build !linux

package listener

import (
	"errors"
	"net"
)

// Unlisten is Linux only (shutdown(SHUT_RD) on a listening socket); elsewhere it says so.
func Unlisten(tcp *net.TCPListener) error {
	return errors.New("stop listening on " + tcp.Addr().String() + ": only supported on Linux")
}

// Listening reports true: only Linux has a socket that Unlisten stopped.
func Listening(*net.TCPListener) (bool, error) { return true, nil }
