package main

// systemd's notification protocol (sd_notify): READY=1 once ready, RELOADING=1 and READY=1
// around a reload, STOPPING=1 when the drain begins, MAINPID= from a process that took over
// by an upgrade, STATUS= lines, and WATCHDOG=1 keep-alives when the unit sets WatchdogSec.
// Without NOTIFY_SOCKET in the environment (not under systemd, or Type= is not notify)
// every call does nothing.
//
// NOTIFY_SOCKET and WATCHDOG_* are taken out of the environment at start: a supervised app
// inherits drainproxy's environment, and with NotifyAccess=all (which upgrades need) its own
// READY=1 or STOPPING=1 would count as the service's. Only the process an upgrade starts
// gets them back.

import (
	"context"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
)

// notifier sends drainproxy's state to systemd. A nil *notifier is valid and silent.
type notifier struct {
	log      hclog.Logger
	socket   string        // NOTIFY_SOCKET; "" when systemd does not listen
	watchdog time.Duration // WATCHDOG_USEC, when systemd watches this process
	// quiet is set once an upgrade handed the service to a new process: from then on this
	// one tells systemd nothing (its STOPPING=1 would stop the service).
	quiet atomic.Bool
}

// newNotifier reads the notification settings systemd gave this process. The watchdog
// variables are removed from the environment, so that a process started later does not
// take them for its own; an upgrade passes WATCHDOG_USEC on to the process that takes
// over (see forUpgrade).
func newNotifier(log hclog.Logger) *notifier {
	n := &notifier{log: log, socket: os.Getenv("NOTIFY_SOCKET")}
	os.Unsetenv("NOTIFY_SOCKET")
	d, err := daemon.SdWatchdogEnabled(true)
	if err != nil {
		log.Warn("ignoring systemd's watchdog settings", "error", err.Error())
	}
	n.watchdog = d
	return n
}

// send is sd_notify(3): one datagram to NOTIFY_SOCKET (daemon.SdNotify does the same,
// but reads the socket from the environment, which this process has cleared).
func (n *notifier) send(state string) {
	if n == nil || n.socket == "" || n.quiet.Load() {
		return
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		n.log.Debug("cannot notify systemd", "socket", n.socket, "error", err.Error())
	}
}

// ready says the service is ready, or ready again after a reload. A process that took
// over by an upgrade says so with MAINPID (which needs NotifyAccess=all in the unit,
// since systemd does not know this pid yet).
func (n *notifier) ready(status string) {
	n.send("READY=1\nSTATUS=" + status)
}

// readyAfterUpgrade is ready, with MAINPID naming this process.
func (n *notifier) readyAfterUpgrade(status string) {
	n.send("MAINPID=" + strconv.Itoa(os.Getpid()) + "\nREADY=1\nSTATUS=" + status)
}

// reloading says a reload has begun; ready ends it. MONOTONIC_USEC lets newer systemd
// (Type=notify-reload) match it with the reload it asked for.
func (n *notifier) reloading() {
	n.send("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading the configuration")
}

// stopping says the drain has begun.
func (n *notifier) stopping(reason string) {
	n.send("STOPPING=1\nSTATUS=draining: " + reason)
}

// status sets the status line alone.
func (n *notifier) status(line string) { n.send("STATUS=" + line) }

// runWatchdog sends WATCHDOG=1 at half the watchdog interval until ctx ends, when systemd
// watches this process. A process stuck so hard that this goroutine does not run is
// killed by systemd, which is the point.
func (n *notifier) runWatchdog(ctx context.Context) {
	if n == nil || n.watchdog <= 0 {
		return
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	n.send("WATCHDOG=1")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.send("WATCHDOG=1")
		}
	}
}

// forUpgrade puts NOTIFY_SOCKET and WATCHDOG_USEC back in the environment for the
// process an upgrade starts (it inherits this process's environment), without
// WATCHDOG_PID: that process becomes the watched one. afterUpgrade takes them out again.
func (n *notifier) forUpgrade() {
	if n == nil {
		return
	}
	if n.socket != "" {
		os.Setenv("NOTIFY_SOCKET", n.socket)
	}
	if n.watchdog > 0 {
		os.Setenv("WATCHDOG_USEC", strconv.FormatInt(n.watchdog.Microseconds(), 10))
	}
}

// afterUpgrade undoes forUpgrade once the new process has started (or failed to).
func (n *notifier) afterUpgrade() {
	os.Unsetenv("NOTIFY_SOCKET")
	os.Unsetenv("WATCHDOG_USEC")
}
