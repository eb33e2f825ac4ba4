package main

// SIGUSR2: upgrade the binary without closing a listening socket (github.com/cloudflare/
// tableflip). The executable at its path is started again with the same arguments and a
// copy of every listening socket; it reads its configuration, opens what it needs (the
// sockets it is given, new ones for listeners the configuration added) and, once ready,
// tells this process, which then drains as on SIGTERM and exits 0. Until then this process
// serves as before; a new process that exits or does not become ready in time is reported
// and changes nothing. Both processes accept on the shared sockets during the handover, so
// the kernel never refuses a connection.
//
// Sockets come from, in order: the process being upgraded; systemd (socket activation,
// LISTEN_FDS), matched to a configured listener by FileDescriptorName= or by address;
// else they are bound here.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/coreos/go-systemd/v22/activation"
	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/sigtrap"
)

// upgrader owns the listening sockets and their handover to the next process.
type upgrader struct {
	log    hclog.Logger
	tf     *tableflip.Upgrader // nil where tableflip cannot work; upgrades are refused then
	tfErr  error               // why tf is nil
	notify *notifier

	activated []activatedSocket // from systemd, not yet matched to a listener
	// systemd holds these sockets (by configured address) and keeps them open for the
	// next start: a drain must leave them as they are (listener.HandOver).
	fromSystemd map[string]bool

	mu     sync.Mutex
	public []*listener.Listener // handed over when an upgrade succeeds
	admin  func()               // closes the admin listener once the next process has it
	d      *drain.Drainer
}

// envSystemdSockets passes fromSystemd to the process an upgrade starts, one address a line.
const envSystemdSockets = "DRAINPROXY_SYSTEMD_SOCKETS"

type activatedSocket struct {
	name string // FileDescriptorName=, or LISTEN_FD_<n>
	ln   *net.TCPListener
}

// newUpgrader takes the sockets systemd passed (and removes LISTEN_* from the
// environment) and sets up tableflip, which takes the sockets of the process this one
// upgrades, if any. timeout is how long a new process may take to become ready.
func newUpgrader(log hclog.Logger, notify *notifier, timeout time.Duration) *upgrader {
	u := &upgrader{log: log, notify: notify, fromSystemd: map[string]bool{}}
	// A process this one upgrades passes on which of its sockets systemd holds.
	if v, ok := os.LookupEnv(envSystemdSockets); ok {
		os.Unsetenv(envSystemdSockets)
		for _, a := range strings.Split(v, "\n") {
			if a != "" {
				u.fromSystemd[a] = true
			}
		}
	}
	for _, f := range activation.Files(true) {
		ln, err := net.FileListener(f)
		f.Close()
		tcp, ok := ln.(*net.TCPListener)
		if err != nil || !ok {
			if ln != nil {
				ln.Close()
			}
			log.Warn("ignoring a socket from systemd that is not a TCP listener", "name", f.Name())
			continue
		}
		u.activated = append(u.activated, activatedSocket{name: f.Name(), ln: tcp})
	}
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false) // the drain's SYN filter needs plain TCP (package listener)
	u.tf, u.tfErr = tableflip.New(tableflip.Options{UpgradeTimeout: timeout, ListenConfig: lc})
	if u.tfErr != nil {
		log.Debug("upgrades (SIGUSR2) are off", "reason", u.tfErr.Error())
	}
	return u
}

// upgraded reports whether this process was started by an upgrade.
func (u *upgrader) upgraded() bool { return u.tf != nil && u.tf.HasParent() }

// socket returns the socket for addr: inherited, from systemd (named name with
// FileDescriptorName=, or bound to addr), or bound now with listen. It is registered for
// the next upgrade.
func (u *upgrader) socket(addr, name string, listen func(addr string) (net.Listener, error)) (*net.TCPListener, error) {
	bind := func(_, addr string) (net.Listener, error) {
		if tcp := u.takeActivated(addr, name); tcp != nil {
			u.fromSystemd[addr] = true
			return tcp, nil
		}
		return listen(addr)
	}
	if u.tf == nil {
		ln, err := bind("tcp", addr)
		if err != nil {
			return nil, err
		}
		tcp, ok := ln.(*net.TCPListener)
		if !ok {
			ln.Close()
			return nil, fmt.Errorf("listen %s: got a %T, not a TCP listener", addr, ln)
		}
		return tcp, nil
	}
	ln, err := u.tf.Fds.ListenWithCallback("tcp", addr, bind)
	if err != nil {
		var le interface{ Unwrap() error }
		if errors.As(err, &le) {
			return nil, err
		}
		// tableflip flattens the error to text; ours is already the line to show.
		return nil, errors.New(trimPrefix(err.Error(), "can't create new listener: "))
	}
	tcp, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("listen %s: the socket handed over is a %T, not a TCP listener", addr, ln)
	}
	if listening, err := listener.Listening(tcp); err == nil && !listening {
		// A reload of the process before removed this listener and stopped its socket,
		// whose copy tableflip handed over anyway: bind the address afresh.
		tcp.Close()
		fresh, err := bind("tcp", addr)
		if err != nil {
			return nil, err
		}
		if tcp, ok = fresh.(*net.TCPListener); !ok {
			fresh.Close()
			return nil, fmt.Errorf("listen %s: got a %T, not a TCP listener", addr, fresh)
		}
		if err := u.tf.Fds.AddListener("tcp", addr, tcp); err != nil { // the next upgrade hands this one over
			tcp.Close()
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	return tcp, nil
}

func trimPrefix(s, p string) string {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// listen is socket wrapped as a public listener.
func (u *upgrader) listen(ctx context.Context, addr string, maxConns int) (*listener.Listener, error) {
	tcp, err := u.socket(addr, "", func(addr string) (net.Listener, error) { return listener.Bind(ctx, addr) })
	if err != nil {
		return nil, err
	}
	ln := listener.FromTCP(tcp, maxConns)
	if u.fromSystemd[addr] {
		// Connections queued when this process stops wait there for the next one:
		// systemctl restart refuses nothing.
		ln.HandOver()
	}
	u.mu.Lock()
	u.public = append(u.public, ln)
	u.mu.Unlock()
	return ln, nil
}

// forget drops ln, which a reload removed, from the listeners an upgrade hands over.
func (u *upgrader) forget(ln *listener.Listener) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.public = slices.DeleteFunc(u.public, func(l *listener.Listener) bool { return l == ln })
}

// takeActivated returns the systemd socket meant for addr, if there is one: the one named
// name (FileDescriptorName=; "" matches none), else the one bound to addr. (A name cannot
// be an address: systemd separates names with colons.)
func (u *upgrader) takeActivated(addr, name string) *net.TCPListener {
	i := slices.IndexFunc(u.activated, func(s activatedSocket) bool { return name != "" && s.name == name })
	if i < 0 {
		i = slices.IndexFunc(u.activated, func(s activatedSocket) bool { return sameAddress(addr, s.ln.Addr()) })
	}
	if i < 0 {
		return nil
	}
	tcp := u.activated[i].ln
	u.activated = slices.Delete(u.activated, i, i+1)
	u.log.Info("using the socket systemd passed", "address", addr, "bound", tcp.Addr().String())
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

// closeUnused closes the systemd sockets no listener asked for, saying so.
func (u *upgrader) closeUnused() {
	for _, s := range u.activated {
		u.log.Warn("a socket systemd passed matches no listener; closing it (name it after the listener's address with FileDescriptorName=, or listen on its address)",
			"name", s.name, "bound", s.ln.Addr().String())
		s.ln.Close()
	}
	u.activated = nil
}

// ready is called once the process is ready: it tells the process being upgraded, if
// any, to drain, and systemd that this one serves.
func (u *upgrader) ready(d *drain.Drainer, closeAdmin func()) {
	u.mu.Lock()
	u.d, u.admin = d, closeAdmin
	u.mu.Unlock()
	if u.tf == nil {
		u.notify.ready("serving")
		return
	}
	if err := u.tf.Ready(); err != nil {
		u.log.Error("cannot tell the process being upgraded that this one is ready", "error", err.Error())
	}
	if u.upgraded() {
		u.log.Info("upgrade: this process serves now; the previous one drains", "pid", os.Getpid())
		u.notify.readyAfterUpgrade("serving (upgraded)")
		return
	}
	u.notify.ready("serving")
}

// heldListener accepts nothing until release is closed: the admin socket of a process an
// upgrade started, so that probes keep reaching the process still serving until this one
// is ready. The public listeners are held by publicListeners.hold.
type heldListener struct {
	net.Listener
	release <-chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (l *heldListener) Accept() (net.Conn, error) {
	select {
	case <-l.release:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	return l.Listener.Accept()
}

func (l *heldListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// trap makes SIGUSR2 upgrade; stop undoes it and waits for an upgrade in progress.
func (u *upgrader) trap() (stop func()) {
	return sigtrap.Handle(func(os.Signal) { u.upgrade() }, syscall.SIGUSR2)
}

// upgrade starts the next process and, once it is ready, drains this one.
func (u *upgrader) upgrade() {
	log := u.log.Named("upgrade")
	u.mu.Lock()
	d, closeAdmin := u.d, u.admin
	u.mu.Unlock()
	switch {
	case os.Getpid() == 1:
		log.Error("cannot upgrade: drainproxy is PID 1 (a container's init), and the container ends when it exits; replace the container with one of the new image instead")
		return
	case u.tf == nil:
		log.Error("cannot upgrade on this system", "reason", u.tfErr.Error())
		return
	case d == nil:
		log.Warn("not upgrading: not ready yet; send SIGUSR2 again once /readyz answers 200")
		return
	case drain.Closed(d.Requested()):
		log.Warn("not upgrading: the drain has begun")
		return
	}
	exe, _ := os.Executable()
	log.Info("upgrading: starting a new process with the same arguments", "executable", os.Args[0], "resolved", exe)
	u.notify.status("upgrading: starting a new process")
	u.notify.forUpgrade()
	var held []string
	for a := range u.fromSystemd {
		held = append(held, a)
	}
	os.Setenv(envSystemdSockets, strings.Join(held, "\n"))
	err := u.tf.Upgrade() // the new process has its copy of the environment by now
	u.notify.afterUpgrade()
	os.Unsetenv(envSystemdSockets)
	if err != nil {
		log.Error("upgrade failed: this process keeps serving", "error", err.Error(),
			"hint", "the new process logs why on the same stderr (exit status 2: its configuration or command line is invalid; try drainproxy -check)")
		u.notify.status("serving; the last upgrade failed: " + err.Error())
		return
	}
	u.mu.Lock()
	for _, ln := range u.public {
		ln.HandOver()
	}
	u.mu.Unlock()
	u.notify.quiet.Store(true) // the new process speaks for the service now
	if closeAdmin != nil {
		closeAdmin() // probes and scrapes reach the new process only
	}
	log.Info("upgrade: the new process is ready; draining this one")
	d.Drain("upgrade: a new process took over")
}

// stop ends upgrades; call it at exit.
func (u *upgrader) stop() {
	if u.tf != nil {
		u.tf.Stop()
	}
}

// withFreshPort is u on a port free a moment ago, on the same host.
func withFreshPort(u *url.URL) (*url.URL, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(u.Hostname(), "0"))
	if err != nil {
		return nil, fmt.Errorf("find a free port on %s for this process's app: %w", u.Hostname(), err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	fresh := *u
	fresh.Host = net.JoinHostPort(u.Hostname(), port)
	return &fresh, nil
}
