package handover

// systemd's notification protocol (sd_notify): READY=1 once ready, RELOADING=1 and READY=1
// around a reload, STOPPING=1 when the drain begins, MAINPID= from a process that took over
// by an upgrade, STATUS= lines, and WATCHDOG=1 keep-alives when the unit sets WatchdogSec.
// Without a notification socket (not under systemd, or Type= is not notify) every call
// does nothing.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
)

// Notifier tells systemd the state of this process. A nil *Notifier is valid and silent.
type Notifier struct {
	log      hclog.Logger
	pid      int
	socket   string        // NOTIFY_SOCKET; "" when systemd does not listen
	watchdog time.Duration // WATCHDOG_USEC, when systemd watches this process
	// quiet is set once an upgrade handed the service to a new process: from then on this
	// one tells systemd nothing (its STOPPING=1 would stop the service).
	quiet atomic.Bool
}

// notifyFromEnv reads the settings systemd gave the first process of a service:
// NOTIFY_SOCKET, and WATCHDOG_USEC unless WATCHDOG_PID names another process.
func notifyFromEnv(log hclog.Logger, getenv func(string) string, pid int) *Notifier {
	n := &Notifier{log: log, pid: pid, socket: getenv("NOTIFY_SOCKET")}
	d, err := watchdogInterval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), pid)
	if err != nil {
		log.Warn("ignoring systemd's watchdog settings", "error", err.Error())
	}
	n.watchdog = d
	return n
}

// watchdogInterval is sd_watchdog_enabled(3): the interval in usec, when pidVar is empty
// or names pid.
func watchdogInterval(usec, pidVar string, pid int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	us, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || us <= 0 {
		return 0, errors.New("WATCHDOG_USEC=" + usec + " is not a positive number of microseconds")
	}
	if pidVar != "" {
		p, err := strconv.Atoi(pidVar)
		if err != nil {
			return 0, errors.New("WATCHDOG_PID=" + pidVar + " is not a process id")
		}
		if p != pid {
			return 0, nil // systemd watches another process
		}
	}
	return time.Duration(us) * time.Microsecond, nil
}

// send is sd_notify(3): one datagram to the notification socket.
func (n *Notifier) send(state string) {
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

// Ready says the service is ready, or ready again after a reload.
func (n *Notifier) Ready(status string) {
	n.send("READY=1\nSTATUS=" + status)
}

// readyAfterUpgrade is Ready with MAINPID naming this process: systemd does not know the
// pid of a process an upgrade started (and accepts it only with NotifyAccess=all).
func (n *Notifier) readyAfterUpgrade(status string) {
	if n == nil {
		return
	}
	n.send("MAINPID=" + strconv.Itoa(n.pid) + "\nREADY=1\nSTATUS=" + status)
}

// Reloading says a reload has begun; Ready ends it. MONOTONIC_USEC lets newer systemd
// (Type=notify-reload) match it with the reload it asked for.
func (n *Notifier) Reloading() {
	n.send("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading the configuration")
}

// Stopping says the drain has begun.
func (n *Notifier) Stopping(reason string) {
	n.send("STOPPING=1\nSTATUS=draining: " + reason)
}

// Status sets the status line alone.
func (n *Notifier) Status(line string) { n.send("STATUS=" + line) }

// RunWatchdog sends WATCHDOG=1 at half the watchdog interval until ctx ends, when systemd
// watches this process. A process stuck so hard that this goroutine does not run is
// killed by systemd, which is the point.
func (n *Notifier) RunWatchdog(ctx context.Context) {
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
