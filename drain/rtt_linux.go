//go:build linux

package drain

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readTCPInfo reads the kernel's TCP_INFO for a client connection. It unwraps TLS
// connections (and any wrapper with a NetConn method); max_connections' connections
// expose their socket (SyscallConn). One that exposes no socket yields ok == false.
func readTCPInfo(c net.Conn) tcpInfo {
	for {
		switch v := c.(type) {
		case syscall.Conn:
			rc, err := v.SyscallConn()
			if err != nil {
				return tcpInfo{}
			}
			var info *unix.TCPInfo
			var sockErr error
			if err := rc.Control(func(fd uintptr) {
				info, sockErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			}); err != nil || sockErr != nil {
				return tcpInfo{}
			}
			return tcpInfo{
				ok:           true,
				rtt:          time.Duration(info.Rtt) * time.Microsecond,
				rttVar:       time.Duration(info.Rttvar) * time.Microsecond,
				rto:          time.Duration(info.Rto) * time.Microsecond,
				lastDataRecv: time.Duration(info.Last_data_recv) * time.Millisecond,
				lastAckRecv:  time.Duration(info.Last_ack_recv) * time.Millisecond,
				unacked:      info.Unacked,
				totalRetrans: info.Total_retrans,
				readAt:       time.Now(),
			}
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			return tcpInfo{}
		}
	}
}
