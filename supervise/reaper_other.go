//go:build unix && !linux

package supervise

import (
	"errors"
	"syscall"
)

func becomeSubreaper() error {
	return errors.New("only Linux has child subreapers; run without orphan reaping")
}

// childSysProcAttr puts the child in its own process group (see the Linux version).
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
