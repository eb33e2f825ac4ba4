package supervise

import (
	"fmt"
	"strings"
	"syscall"
)

// signalNames are the signals that can be named in options, by their conventional names.
// A function, not a package variable, so that nothing can change it.
func signalNames() []struct {
	name string
	sig  syscall.Signal
} {
	return []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
		{"SIGQUIT", syscall.SIGQUIT},
		{"SIGHUP", syscall.SIGHUP},
		{"SIGKILL", syscall.SIGKILL},
		{"SIGUSR1", syscall.SIGUSR1},
		{"SIGUSR2", syscall.SIGUSR2},
		{"SIGWINCH", syscall.SIGWINCH},
		{"SIGTTIN", syscall.SIGTTIN},
		{"SIGTTOU", syscall.SIGTTOU},
		{"SIGSTOP", syscall.SIGSTOP},
		{"SIGCHLD", syscall.SIGCHLD},
	}
}

// SignalName is the conventional name of sig ("SIGTERM"), or "signal N" for one that
// has none here.
func SignalName(sig syscall.Signal) string {
	for _, s := range signalNames() {
		if s.sig == sig {
			return s.name
		}
	}
	return fmt.Sprintf("signal %d", int(sig))
}

func lookupSignal(name string) (syscall.Signal, bool) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	for _, s := range signalNames() {
		if s.name == n {
			return s.sig, true
		}
	}
	return 0, false
}

// stopSignals are the signals an app can be asked to stop with.
func stopSignals() []syscall.Signal {
	return []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGKILL}
}

// forwardableSignals are the signals drainproxy can pass on to the app. SIGTERM and SIGINT
// start drainproxy's own drain and SIGHUP is kept for drainproxy's reload and restart, so
// they cannot be forwarded; SIGCHLD, SIGKILL and SIGSTOP cannot be caught at all.
func forwardableSignals() []syscall.Signal {
	return []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH,
		syscall.SIGTTIN, syscall.SIGTTOU}
}

func signalList(sigs []syscall.Signal) string {
	names := make([]string, len(sigs))
	for i, s := range sigs {
		names[i] = `"` + SignalName(s) + `"`
	}
	return strings.Join(names, ", ")
}

func parseFrom(name string, allowed []syscall.Signal) (syscall.Signal, error) {
	sig, ok := lookupSignal(name)
	if ok {
		for _, a := range allowed {
			if a == sig {
				return sig, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not allowed; write one of %s", name, signalList(allowed))
}

// ParseStopSignal parses the name of the signal that asks the app to stop: "SIGTERM" or
// "TERM", in any case.
func ParseStopSignal(name string) (syscall.Signal, error) { return parseFrom(name, stopSignals()) }

// ParseForwardSignal parses the name of a signal to pass on to the app. SIGTERM, SIGINT
// and SIGHUP are refused: drainproxy acts on them itself.
func ParseForwardSignal(name string) (syscall.Signal, error) {
	return parseFrom(name, forwardableSignals())
}
