package handover

// What a process tells the one its upgrade starts, beside the sockets: systemd's
// notification socket and watchdog interval (the new process becomes the one systemd
// hears from and watches) and which sockets systemd holds. It travels as a small JSON
// document in a pipe that tableflip passes like the sockets, never in the environment:
// tableflip gives the new process this one's environment as it is, so the systemd
// variables there describe the first process of the service, and a process started by an
// upgrade ignores them.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cloudflare/tableflip"
)

// handoffName is the name tableflip passes the pipe under.
const handoffName = "drainproxy-handoff"

// maxHandoff bounds the document: it is written whole into a pipe before the new
// process starts, so it must fit the pipe's buffer (64 KiB on Linux, 16 KiB at least).
const maxHandoff = 16 << 10

type handoff struct {
	NotifySocket string `json:"notify_socket,omitempty"`
	// WatchdogUsec is systemd's watchdog interval; the new process is the one watched.
	WatchdogUsec int64 `json:"watchdog_usec,omitempty"`
	// SystemdSockets are the configured addresses whose sockets systemd holds.
	SystemdSockets []string `json:"systemd_sockets,omitempty"`
}

// envSystemdSockets is how drainproxy before the handoff pipe passed SystemdSockets (one
// address a line), with NOTIFY_SOCKET and WATCHDOG_USEC set for the new process alone:
// an upgrade from such a version still works.
const envSystemdSockets = "DRAINPROXY_SYSTEMD_SOCKETS"

// passHandoff registers the document for the process the next upgrade starts. A document
// from an earlier, failed attempt is replaced.
func passHandoff(fds *tableflip.Fds, h handoff) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if len(b) > maxHandoff {
		return fmt.Errorf("the handoff to the new process is %d bytes, more than %d", len(b), maxHandoff)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close() // tableflip keeps its own copy
	_, err = w.Write(b)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return fds.AddFile(handoffName, r)
}

// takeHandoff reads what the process that started this one passed. Without the pipe (the
// previous process is an older drainproxy) it reads what that version put in the
// environment for this process.
func takeHandoff(fds *tableflip.Fds, getenv func(string) string) (handoff, error) {
	f, err := fds.File(handoffName)
	if err != nil {
		return handoff{}, err
	}
	if f == nil {
		h := handoff{NotifySocket: getenv("NOTIFY_SOCKET")}
		if us, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
			h.WatchdogUsec = us
		}
		h.SystemdSockets = slices.DeleteFunc(strings.Split(getenv(envSystemdSockets), "\n"),
			func(a string) bool { return a == "" })
		return h, nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHandoff+1))
	if err != nil {
		return handoff{}, err
	}
	var h handoff
	if err := json.Unmarshal(b, &h); err != nil {
		return handoff{}, errors.New("the handoff from the previous process does not parse: " + err.Error())
	}
	return h, nil
}
