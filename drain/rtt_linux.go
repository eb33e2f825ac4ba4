//go:build linux

package drain

import (
	"net"
	"reflect"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readTCPInfo reads the kernel's TCP_INFO for a client connection. It unwraps TLS
// connections and wrappers that embed the connection (netutil.LimitListener's, which
// max_connections puts around every connection); one that exposes no socket yields
// ok == false.
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
				readAt:       time.Now(),
			}
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			if c = embeddedConn(c); c == nil {
				return tcpInfo{}
			}
		}
	}
}

// embeddedConn returns the net.Conn a wrapper struct embeds (an exported field named
// Conn, as golang.org/x/net/netutil's limitListenerConn has), or nil. The wrapper's type
// is unexported, so only reflection reaches it; the field itself is exported.
func embeddedConn(c net.Conn) net.Conn {
	v := reflect.ValueOf(c)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("Conn")
	if !f.IsValid() || !f.CanInterface() || f.IsNil() {
		return nil
	}
	inner, ok := f.Interface().(net.Conn)
	if !ok || inner == c {
		return nil
	}
	return inner
}
