package drain

import (
	"fmt"
	"os"
	"strings"

	"github.com/drainproxy/drainproxy/internal/logdur"
)

// logFields are the fields of the "drain complete" line, in order.
func (s Summary) logFields() []any {
	return []any{"drained", s.Drained, "aborted", s.Aborted,
		"cut_before_head", s.CutBeforeHead, "cut_mid_response", s.CutMidResponse, "upgrades_closed", s.UpgradesClosed,
		"upstream_failed", s.UpstreamFailed, "unserved", s.Unserved,
		"took", logdur.Format(s.Took), "forced", s.Forced, "exit_code", s.ExitCode()}
}

// Line is the summary in one line of key=value pairs, as written to the termination log.
func (s Summary) Line() string {
	var b strings.Builder
	b.WriteString("drain complete:")
	f := s.logFields()
	for i := 0; i+1 < len(f); i += 2 {
		fmt.Fprintf(&b, " %s=%v", f[i], f[i+1])
	}
	if s.Err != nil {
		fmt.Fprintf(&b, " error=%q", s.Err.Error())
	}
	if len(s.Workers) > 0 {
		fmt.Fprintf(&b, " unfinished_workers=%s", strings.Join(s.Workers, ","))
	}
	return b.String()
}

// writeTerminationLog writes the summary line to Options.TerminationLog, if set: on
// Kubernetes, /dev/termination-log, which `kubectl describe pod` shows as the container's
// last state message. The file is truncated first: it holds the last drain's outcome.
func (d *Drainer) writeTerminationLog(s Summary) {
	path := d.opts.TerminationLog
	if path == "" {
		return
	}
	if err := os.WriteFile(path, []byte(s.Line()+"\n"), 0o644); err != nil {
		d.log.Warn("cannot write the drain summary to the termination log", "path", path, "error", err.Error())
	}
}
