package instance

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/drainproxy/drainproxy/config"
)

// Issue 23, item 7: the text log escapes control characters in values, so that a client's
// %0A in a path cannot split an error line into one that looks like a line of its own.
func TestTextLogEscapesControlCharacters(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(config.Log{Format: "text", Level: "info"}, &buf)
	forged := "/a\n2026-01-01T00:00:00Z [ERROR] drainproxy: forged line\r\x1b[31m"
	log.Named("proxy").With("upstream", "u").Error("upstream request failed", "path", forged, "error", errors.New("bad\nthing"))
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 1 {
		t.Errorf("one log call wrote %d lines, want 1:\n%s", n, out)
	}
	if strings.ContainsAny(strings.TrimSuffix(out, "\n"), "\r\x1b") {
		t.Errorf("control characters reached the text log: %q", out)
	}
	if !strings.Contains(out, `/a\n2026-01-01T00:00:00Z`) {
		t.Errorf("the escaped path is not in the line: %q", out)
	}
}
