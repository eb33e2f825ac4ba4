package supervise

import (
	"fmt"
	"time"
)

// Restart is when the app is started again after it exits on its own.
type Restart string

// The restart policies.
const (
	// RestartNever drains and exits with the app's exit code when it exits.
	RestartNever Restart = "never"
	// RestartOnFailure restarts the app when it exits with a non-zero code or is killed by
	// a signal; when it exits with 0 drainproxy drains and exits with 0.
	RestartOnFailure Restart = "on-failure"
	// RestartAlways restarts the app whenever it exits.
	RestartAlways Restart = "always"
)

// ParseRestart parses a restart policy's name.
func ParseRestart(s string) (Restart, error) {
	switch r := Restart(s); r {
	case RestartNever, RestartOnFailure, RestartAlways:
		return r, nil
	}
	return "", fmt.Errorf("%q is not allowed; write one of \"never\", \"on-failure\", \"always\"", s)
}

// wants reports whether the policy restarts after exit e.
func (r Restart) wants(e Exit) bool {
	switch r {
	case RestartAlways:
		return true
	case RestartOnFailure:
		return !e.Success()
	}
	return false
}

// restartBudget decides whether another restart is allowed and how long to wait first:
// exponential backoff from min to max, and at most limit restarts within window. An app
// that ran for at least max before exiting starts over at min, so that a rare crash in a
// long-lived app is not punished for crashes long ago.
type restartBudget struct {
	min, max time.Duration
	limit    int
	window   time.Duration

	next   time.Duration // the backoff before the next restart
	recent []time.Time   // restarts within the window, oldest first
}

func newRestartBudget(min, max time.Duration, limit int, window time.Duration) *restartBudget {
	return &restartBudget{min: min, max: max, limit: limit, window: window, next: min}
}

// take is called when the app exited at now after running for ran. It returns the wait
// before the restart, or ok=false when the limit has been reached.
func (b *restartBudget) take(now time.Time, ran time.Duration) (wait time.Duration, ok bool) {
	if ran >= b.max {
		b.next = b.min
	}
	keep := b.recent[:0]
	for _, t := range b.recent {
		if now.Sub(t) < b.window {
			keep = append(keep, t)
		}
	}
	b.recent = keep
	if len(b.recent) >= b.limit {
		return 0, false
	}
	b.recent = append(b.recent, now)
	wait = b.next
	b.next = min(2*b.next, b.max)
	return wait, true
}
