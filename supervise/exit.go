package supervise

import (
	"fmt"
	"syscall"
)

// Exit is how a process ended: with an exit code, or killed by a signal.
type Exit struct {
	// Code is the exit code, or -1 when a signal killed the process.
	Code int
	// Signal is the signal that killed the process, or 0 when it exited by itself.
	Signal syscall.Signal
}

func exitFromWaitStatus(ws syscall.WaitStatus) Exit {
	if ws.Signaled() {
		return Exit{Code: -1, Signal: ws.Signal()}
	}
	return Exit{Code: ws.ExitStatus()}
}

// Success reports whether the process exited with code 0.
func (e Exit) Success() bool { return e.Signal == 0 && e.Code == 0 }

// ShellCode is the exit code a shell would report: the code itself, or 128 plus the
// signal's number when a signal killed the process (143 for SIGTERM).
func (e Exit) ShellCode() int {
	if e.Signal != 0 {
		return 128 + int(e.Signal)
	}
	return e.Code
}

// String says how the process ended, for logs and messages: "exit code 3" or
// "killed by SIGKILL".
func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by " + SignalName(e.Signal)
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

// logPairs are the stable log keys for an exit: exit_code always (the shell's code), and
// signal when one killed the process.
func (e Exit) logPairs() []any {
	if e.Signal != 0 {
		return []any{"exit_code", e.ShellCode(), "signal", SignalName(e.Signal)}
	}
	return []any{"exit_code", e.Code}
}
