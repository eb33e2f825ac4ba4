//go:build !linux

package drain

import "net"

// readTCPInfo is Linux-only; elsewhere the idle window uses fallbackRTTMargin.
func readTCPInfo(net.Conn) tcpInfo { return tcpInfo{} }
