package supervise

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// childSysProcAttr puts the child in its own process group, so that a Ctrl-C in a
// terminal (SIGINT to the foreground group) reaches drainproxy only and the app keeps
// serving until the drain is over. Pdeathsig kills the child if drainproxy itself dies
// without stopping it (SIGKILL, a crash), so that no unsupervised app keeps the port.
// Pdeathsig fires when the forking OS thread exits; the Go runtime ends threads only
// for goroutines that lock one and return, which this package never does.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
