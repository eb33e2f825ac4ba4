// Package handover owns the listening sockets of a drainproxy process and their handover
// to the next one, and tells systemd what the process is doing.
//
//   - Upgrades (SIGUSR2, github.com/cloudflare/tableflip): the executable at its path is
//     started again with the same arguments and a copy of every listening socket; it reads
//     its configuration, opens what it needs (the sockets it is given, new ones for
//     listeners the configuration added) and, once ready, tells this process, which then
//     drains and exits. Until then this process serves as before; a new process that exits
//     or does not become ready in time is reported and changes nothing. Both processes
//     accept on the shared sockets during the handover, so the kernel never refuses a
//     connection.
//   - Socket activation (systemd's LISTEN_FDS): a socket systemd passed is matched to a
//     listener by FileDescriptorName= or by address (activation.go).
//   - Notification (sd_notify): READY, RELOADING, STOPPING, STATUS, MAINPID and WATCHDOG
//     (notify.go).
//
// The process's environment is read (through Options.Getenv) and never changed: what the
// new process of an upgrade needs travels with the sockets (handoff.go), and a program
// drainproxy starts gets an environment without systemd's variables (Environ).
//
//	h := handover.New(handover.Options{Logger: log, UpgradeTimeout: 30 * time.Second})
//	defer h.Stop()
//	ln, err := h.Listen(ctx, ":8080", "", maxConns)  // inherited, from systemd, or bound
//	adminLn, err := h.Socket("127.0.0.1:9090", "admin", admin.Listen)
//	h.CloseUnused()                                  // systemd sockets no listener took
//	h.Ready(drainer, closeAdmin)                     // the previous process drains now
//	defer h.TrapUpgrade()()                          // SIGUSR2 calls h.Upgrade
//	h.Notifier().Stopping("draining")
//
// One Handover per process: tableflip allows one upgrader per process; a second Handover
// works but refuses upgrades.
package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/sigtrap"
)

// Options configures a Handover.
type Options struct {
	// Logger receives what happens to sockets and upgrades (nil: no logs).
	Logger hclog.Logger
	// UpgradeTimeout is how long the new process of an upgrade may take to become ready
	// before it is killed and the upgrade fails (zero: one minute).
	UpgradeTimeout time.Duration
	// Getenv reads the process's environment: NOTIFY_SOCKET, WATCHDOG_*, LISTEN_* (nil:
	// os.Getenv).
	Getenv func(string) string
}

// Drainer is the drain of this process, which an upgrade starts once the new process
// serves (a *drain.Drainer).
type Drainer interface {
	Drain(reason string)
	// Requested is closed once a drain was asked for; no upgrade starts after that.
	Requested() <-chan struct{}
}

// Handover owns the listening sockets of this process and their handover to the next one.
type Handover struct {
	log    hclog.Logger
	pid    int
	tf     *tableflip.Upgrader // nil where tableflip cannot work; upgrades are refused then
	tfErr  error               // why tf is nil
	notify *Notifier

	mu        sync.Mutex
	activated []activatedSocket // from systemd, not yet matched to a listener
	// systemd holds these sockets (by configured address) and keeps them open for the
	// next start: a drain must leave them as they are (listener.HandOver).
	fromSystemd map[string]bool
	public      []*listener.Listener // handed over when an upgrade succeeds
	d           Drainer              // set by Ready
	closeAdmin  func()
}

// New takes the sockets systemd passed and those of the process this one upgrades, if
// any, and reads systemd's notification settings (from that process, or from the
// environment).
func New(opts Options) *Handover {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	h := &Handover{log: opts.Logger, pid: os.Getpid(), fromSystemd: map[string]bool{}}
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false) // the drain's SYN filter needs plain TCP (package listener)
	h.tf, h.tfErr = tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout, ListenConfig: lc})
	if h.tfErr != nil {
		h.log.Debug("upgrades (SIGUSR2) are off", "reason", h.tfErr.Error())
	}
	notifyLog := h.log.Named("systemd")
	if !h.Upgraded() {
		h.notify = notifyFromEnv(notifyLog, opts.Getenv, h.pid)
		h.activated = h.activatedSockets(opts.Getenv, h.pid)
		return h
	}
	// Started by an upgrade: the environment is the previous process's.
	ho, err := takeHandoff(h.tf.Fds, opts.Getenv)
	if err != nil {
		h.log.Warn("cannot read what the previous process passed on; systemd will not hear from this one", "error", err.Error())
	}
	h.notify = &Notifier{log: notifyLog, pid: h.pid, socket: ho.NotifySocket,
		watchdog: time.Duration(ho.WatchdogUsec) * time.Microsecond}
	for _, a := range ho.SystemdSockets {
		h.fromSystemd[a] = true
	}
	return h
}

// Upgraded reports whether this process was started by an upgrade.
func (h *Handover) Upgraded() bool { return h.tf != nil && h.tf.HasParent() }

// Notifier tells systemd what this process does.
func (h *Handover) Notifier() *Notifier { return h.notify }

// Socket returns the socket for addr: inherited, from systemd (named name with
// FileDescriptorName=, or bound to addr), or bound now with bind. The next upgrade hands
// it over.
func (h *Handover) Socket(addr, name string, bind func(addr string) (net.Listener, error)) (*net.TCPListener, error) {
	open := func(_, addr string) (net.Listener, error) {
		h.mu.Lock()
		tcp := h.takeActivated(addr, name)
		if tcp != nil {
			h.fromSystemd[addr] = true
		}
		h.mu.Unlock()
		if tcp != nil {
			return tcp, nil
		}
		return bind(addr)
	}
	if h.tf == nil {
		return asTCP(open("tcp", addr))
	}
	ln, err := h.tf.Fds.ListenWithCallback("tcp", addr, open)
	if err != nil {
		var le interface{ Unwrap() error }
		if errors.As(err, &le) {
			return nil, err
		}
		// tableflip flattens the error to text; ours is already the line to show.
		return nil, errors.New(trimPrefix(err.Error(), "can't create new listener: "))
	}
	tcp, err := asTCP(ln, nil)
	if err != nil {
		return nil, err
	}
	if listening, err := listener.Listening(tcp); err == nil && !listening {
		// A reload of the process before removed this listener and stopped its socket,
		// whose copy tableflip handed over anyway: bind the address afresh.
		tcp.Close()
		if tcp, err = asTCP(open("tcp", addr)); err != nil {
			return nil, err
		}
		if err := h.tf.Fds.AddListener("tcp", addr, tcp); err != nil { // the next upgrade hands this one over
			tcp.Close()
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	return tcp, nil
}

func asTCP(ln net.Listener, err error) (*net.TCPListener, error) {
	if err != nil {
		return nil, err
	}
	tcp, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("listen %s: got a %T, not a TCP listener", ln.Addr(), ln)
	}
	return tcp, nil
}

func trimPrefix(s, p string) string {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// Listen is Socket for a public listener, bound with listener.Bind and wrapped with
// listener.FromTCP. Remove it with Forget when it stops for good before the process does.
func (h *Handover) Listen(ctx context.Context, addr, name string, maxConns int) (*listener.Listener, error) {
	tcp, err := h.Socket(addr, name, func(addr string) (net.Listener, error) { return listener.Bind(ctx, addr) })
	if err != nil {
		return nil, err
	}
	ln := listener.FromTCP(tcp, maxConns)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fromSystemd[addr] {
		// Connections queued when this process stops wait there for the next one:
		// systemctl restart refuses nothing.
		ln.HandOver()
	}
	h.public = append(h.public, ln)
	return ln, nil
}

// Forget drops ln, which stopped for good (a reload removed it), from the listeners an
// upgrade hands over.
func (h *Handover) Forget(ln *listener.Listener) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.public = slices.DeleteFunc(h.public, func(l *listener.Listener) bool { return l == ln })
}

// Ready is called once the process serves: it tells the process being upgraded, if any,
// to drain, and systemd that this one serves. From then on an upgrade may start; it
// drains d once the new process serves, after calling closeAdmin (may be nil), which
// closes what probes and scrapes reach.
func (h *Handover) Ready(d Drainer, closeAdmin func()) {
	h.mu.Lock()
	h.d, h.closeAdmin = d, closeAdmin
	h.mu.Unlock()
	if h.tf == nil {
		h.notify.Ready("serving")
		return
	}
	if err := h.tf.Ready(); err != nil {
		h.log.Error("cannot tell the process being upgraded that this one is ready", "error", err.Error())
	}
	if h.Upgraded() {
		h.log.Info("upgrade: this process serves now; the previous one drains", "pid", h.pid)
		h.notify.readyAfterUpgrade("serving (upgraded)")
		return
	}
	h.notify.Ready("serving")
}

// TrapUpgrade makes SIGUSR2 call Upgrade; stop undoes it and waits for an upgrade in
// progress.
func (h *Handover) TrapUpgrade() (stop func()) {
	return sigtrap.Handle(func(os.Signal) { _ = h.Upgrade() }, syscall.SIGUSR2)
}

// Upgrade starts the next process and, once it is ready, hands every socket over and
// drains this one. It logs what happens and returns why it did not upgrade, if it did
// not; this process then serves on.
func (h *Handover) Upgrade() error {
	log := h.log.Named("upgrade")
	h.mu.Lock()
	d, closeAdmin := h.d, h.closeAdmin
	held := make([]string, 0, len(h.fromSystemd))
	for a := range h.fromSystemd {
		held = append(held, a)
	}
	h.mu.Unlock()
	refuse := func(msg string, args ...any) error {
		log.Error(msg, args...)
		return errors.New(msg)
	}
	switch {
	case h.pid == 1:
		return refuse("cannot upgrade: drainproxy is PID 1 (a container's init), and the container ends when it exits; replace the container with one of the new image instead")
	case h.tf == nil:
		return refuse("cannot upgrade on this system", "reason", h.tfErr.Error())
	case d == nil:
		log.Warn("not upgrading: not ready yet; send SIGUSR2 again once /readyz answers 200")
		return errors.New("not ready yet")
	case drain.Closed(d.Requested()):
		log.Warn("not upgrading: the drain has begun")
		return errors.New("the drain has begun")
	}
	exe, _ := os.Executable()
	log.Info("upgrading: starting a new process with the same arguments", "executable", os.Args[0], "resolved", exe)
	h.notify.Status("upgrading: starting a new process")
	ho := handoff{NotifySocket: h.notify.socket, WatchdogUsec: h.notify.watchdog.Microseconds(), SystemdSockets: held}
	err := passHandoff(h.tf.Fds, ho)
	if err == nil {
		err = h.tf.Upgrade()
	}
	if err != nil {
		log.Error("upgrade failed: this process keeps serving", "error", err.Error(),
			"hint", "the new process logs why on the same stderr (exit status 2: its configuration or command line is invalid; try drainproxy -check)")
		h.notify.Status("serving; the last upgrade failed: " + err.Error())
		return err
	}
	h.mu.Lock()
	for _, ln := range h.public {
		ln.HandOver()
	}
	h.mu.Unlock()
	h.notify.quiet.Store(true) // the new process speaks for the service now
	if closeAdmin != nil {
		closeAdmin() // probes and scrapes reach the new process only
	}
	log.Info("upgrade: the new process is ready; draining this one")
	d.Drain("upgrade: a new process took over")
	return nil
}

// Stop ends upgrades; call it at exit.
func (h *Handover) Stop() {
	if h.tf != nil {
		h.tf.Stop()
	}
}
