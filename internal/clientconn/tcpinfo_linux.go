//go:build linux

package clientconn

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Read reads the kernel's TCP_INFO for c (see Socket for the wrappers it sees through).
func Read(c net.Conn) Info {
	raw, ok := Socket(c)
	if !ok {
		return Info{}
	}
	var info *unix.TCPInfo
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		info, sockErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return Info{Closed: true} // net.ErrClosed: the descriptor is gone
	}
	if sockErr != nil {
		return Info{} // not a TCP socket (a unix socket)
	}
	return Info{
		OK:           true,
		State:        info.State,
		RTT:          time.Duration(info.Rtt) * time.Microsecond,
		RTTVar:       time.Duration(info.Rttvar) * time.Microsecond,
		RTO:          time.Duration(info.Rto) * time.Microsecond,
		LastDataRecv: time.Duration(info.Last_data_recv) * time.Millisecond,
		LastAckRecv:  time.Duration(info.Last_ack_recv) * time.Millisecond,
		Unacked:      info.Unacked,
		TotalRetrans: info.Total_retrans,
		ReadAt:       time.Now(),
	}
}
