//go:build linux

package drain

import (
	"net"

	"github.com/drainproxy/drainproxy/internal/clientconn"
)

// readTCPInfo reads the kernel's TCP_INFO for a client connection (clientconn.Read: it
// unwraps TLS connections and max_connections' ones). One that exposes no socket yields
// ok == false.
func readTCPInfo(c net.Conn) tcpInfo {
	i := clientconn.Read(c)
	if !i.OK {
		return tcpInfo{}
	}
	return tcpInfo{
		ok:           true,
		rtt:          i.RTT,
		rttVar:       i.RTTVar,
		rto:          i.RTO,
		lastDataRecv: i.LastDataRecv,
		lastAckRecv:  i.LastAckRecv,
		unacked:      i.Unacked,
		totalRetrans: i.TotalRetrans,
		readAt:       i.ReadAt,
	}
}
