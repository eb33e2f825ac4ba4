//go:build linux

package listener

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// halfOpenCounter counts the handshakes under way on one listening address: request
// sockets that answered a SYN with a SYN-ACK and wait for the client's final ACK. The
// kernel keeps them out of the listener's accept queue (and out of TCP_INFO), so a close
// during that round trip resets a client that already believes it is connected. Linux
// reports them through sock_diag (NETLINK_INET_DIAG): in state TCP_NEW_SYN_RECV on kernels
// since 4.4, TCP_SYN_RECV before.
type halfOpenCounter struct {
	conn     *netlink.Conn
	families []uint8
	port     uint16
	addr     netip.Addr // the listener's address; unspecified matches any
}

// TCP states from include/net/tcp_states.h.
const (
	tcpSynRecv    = 3
	tcpNewSynRecv = 12
)

// inet_diag wire sizes (include/uapi/linux/inet_diag.h).
const (
	inetDiagReqV2Len = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
)

// newHalfOpenCounter opens the netlink socket for a listener bound to addr.
func newHalfOpenCounter(addr net.Addr) (*halfOpenCounter, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("count half-open handshakes: %T is not a TCP address", addr)
	}
	ip, _ := netip.AddrFromSlice(tcp.IP)
	ip = ip.Unmap()
	h := &halfOpenCounter{port: uint16(tcp.Port), addr: ip}
	switch {
	case ip.Is4():
		h.families = []uint8{unix.AF_INET}
	case ip.IsUnspecified() || !ip.IsValid():
		// A wildcard IPv6 socket also takes IPv4 handshakes, whose request sockets are
		// AF_INET; a wildcard IPv4 socket only AF_INET ones, so asking twice is harmless.
		h.families = []uint8{unix.AF_INET, unix.AF_INET6}
	default:
		h.families = []uint8{unix.AF_INET6}
	}
	if ip.IsUnspecified() {
		h.addr = netip.Addr{}
	}
	c, err := netlink.Dial(unix.NETLINK_INET_DIAG, nil)
	if err != nil {
		return nil, fmt.Errorf("count half-open handshakes: open sock_diag netlink socket: %w", err)
	}
	h.conn = c
	return h, nil
}

func (h *halfOpenCounter) Close() error { return h.conn.Close() }

// count returns how many handshakes to the listener's port (and address) are half done.
func (h *halfOpenCounter) count() (int, error) {
	n := 0
	for _, family := range h.families {
		msgs, err := h.conn.Execute(netlink.Message{
			Header: netlink.Header{
				Type:  sockDiagByFamily,
				Flags: netlink.Request | netlink.Dump,
			},
			Data: h.request(family),
		})
		if err != nil {
			return 0, fmt.Errorf("count half-open handshakes: sock_diag dump: %w", err)
		}
		for _, m := range msgs {
			if h.matches(family, m.Data) {
				n++
			}
		}
	}
	return n, nil
}

// request encodes struct inet_diag_req_v2 asking for TCP sockets in the two half-open
// states whose local port is ours (the kernel filters on idiag_sport in a dump).
func (h *halfOpenCounter) request(family uint8) []byte {
	b := make([]byte, inetDiagReqV2Len)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	// b[2] idiag_ext = 0: no extensions; b[3] pad.
	binary.NativeEndian.PutUint32(b[4:8], 1<<tcpSynRecv|1<<tcpNewSynRecv)
	binary.BigEndian.PutUint16(b[8:10], h.port) // idiag_sport
	// dport, src, dst, if zero; cookie = INET_DIAG_NOCOOKIE.
	binary.NativeEndian.PutUint32(b[48:52], ^uint32(0))
	binary.NativeEndian.PutUint32(b[52:56], ^uint32(0))
	return b
}

// matches reports whether an inet_diag_msg is a half-open handshake to our address.
func (h *halfOpenCounter) matches(family uint8, b []byte) bool {
	if len(b) < inetDiagMsgLen || b[0] != family {
		return false
	}
	if state := b[1]; state != tcpSynRecv && state != tcpNewSynRecv {
		return false
	}
	if binary.BigEndian.Uint16(b[4:6]) != h.port {
		return false
	}
	if !h.addr.IsValid() {
		return true
	}
	var src netip.Addr
	if family == unix.AF_INET {
		src = netip.AddrFrom4([4]byte(b[8:12]))
	} else {
		src = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
	}
	return src == h.addr
}
