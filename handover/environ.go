package handover

import (
	"slices"
	"strings"
)

// systemdVars are the variables systemd sets for the service's main process, and
// tableflip's mark of a process started by an upgrade.
var systemdVars = []string{
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
	envSystemdSockets, "TABLEFLIP_HAS_PARENT_7DIU3",
}

// Environ is environ (as os.Environ returns it) without the variables that tell a process
// it is systemd's main process or was started by an upgrade: the environment for a
// program drainproxy starts, such as the supervised app. With NotifyAccess=all (which
// upgrades need) the app's own READY=1 or STOPPING=1 would otherwise count as the
// service's.
func Environ(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(systemdVars, name) {
			out = append(out, kv)
		}
	}
	return out
}
