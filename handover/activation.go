package handover

// systemd socket activation (sd_listen_fds(3)): systemd binds the sockets of a .socket unit
// and starts the service with them as fds 3, 4, ..., saying how many in LISTEN_FDS, their
// FileDescriptorName= in LISTEN_FDNAMES (colon-separated) and for which process in
// LISTEN_PID. The variables are read, never removed: LISTEN_PID names this process, so a
// process that inherits them ignores them, and the supervised app gets an environment
// without them (Environ).

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// listenFdsStart is the first fd systemd passes (SD_LISTEN_FDS_START).
const listenFdsStart = 3

type activatedSocket struct {
	name string // FileDescriptorName=, or LISTEN_FD_<n>
	ln   *net.TCPListener
}

// activatedSockets takes the sockets systemd passed to process pid, if any. They are
// closed on exec, so that no program this process starts inherits them.
func (h *Handover) activatedSockets(getenv func(string) string, pid int) []activatedSocket {
	if p, err := strconv.Atoi(getenv("LISTEN_PID")); err != nil || p != pid {
		return nil
	}
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(getenv("LISTEN_FDNAMES"), ":")
	var sockets []activatedSocket
	for i := range n {
		fd := listenFdsStart + i
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		f.Close() // ln has its own copy
		tcp, ok := ln.(*net.TCPListener)
		if err != nil || !ok {
			if ln != nil {
				ln.Close()
			}
			h.log.Warn("ignoring a socket from systemd that is not a TCP listener", "name", name)
			continue
		}
		sockets = append(sockets, activatedSocket{name: name, ln: tcp})
	}
	return sockets
}

// takeActivated returns the systemd socket meant for addr, if there is one: the one named
// name (FileDescriptorName=; "" matches none), else the one bound to addr. (A name cannot
// be an address: systemd separates names with colons.) h.mu must be held.
func (h *Handover) takeActivated(addr, name string) *net.TCPListener {
	i := slices.IndexFunc(h.activated, func(s activatedSocket) bool { return name != "" && s.name == name })
	if i < 0 {
		i = slices.IndexFunc(h.activated, func(s activatedSocket) bool { return sameAddress(addr, s.ln.Addr()) })
	}
	if i < 0 {
		return nil
	}
	tcp := h.activated[i].ln
	h.activated = slices.Delete(h.activated, i, i+1)
	h.log.Info("using the socket systemd passed", "address", addr, "bound", tcp.Addr().String())
	return tcp
}

// sameAddress reports whether the configured addr (host:port; an empty host is every
// address) names the bound socket a.
func sameAddress(addr string, a net.Addr) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	bound, err := netip.ParseAddrPort(a.String())
	if err != nil || strconv.Itoa(int(bound.Port())) != port {
		return false
	}
	if host == "" {
		return bound.Addr().IsUnspecified()
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap() == bound.Addr().Unmap()
}

// CloseUnused closes the systemd sockets no listener asked for, saying so. Call it once
// every listener is open.
func (h *Handover) CloseUnused() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.activated {
		h.log.Warn("a socket systemd passed matches no listener; closing it (name it after the listener's address with FileDescriptorName=, or listen on its address)",
			"name", s.name, "bound", s.ln.Addr().String())
		s.ln.Close()
	}
	h.activated = nil
}
