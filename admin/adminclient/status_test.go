package adminclient

import (
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/admin"
	"github.com/drainproxy/drainproxy/drain"
)

// The -watch screen fits the terminal it is drawn on: a longer line would wrap and push
// the redraw off by a line on every tick.
func TestStatusScreenFitsItsWidth(t *testing.T) {
	now := time.Date(2026, 12, 7, 20, 0, 10, 0, time.UTC)
	started := now.Add(-4 * time.Second)
	st := &admin.Status{
		Phase: "stopping", NotReadyReason: "stopping", Version: "v1.2.3", PID: 4242, UptimeSeconds: 3600,
		Upstream:        admin.UpstreamStatus{URL: "http://app.internal.example:3000"},
		OpenConnections: 12345, DrainedRequests: 123456, AbortedRequests: 12,
		Drain: &drain.DrainClock{Reason: "signal SIGTERM", Started: started, Step: drain.StepWait,
			StepStarted: started.Add(time.Second), Deadline: started.Add(31 * time.Second)},
		Inflight: &drain.Inflight{Total: 3, Requests: 2, Upgraded: 1, Entries: []drain.InflightEntry{
			{ID: strings.Repeat("a", 32), Protocol: drain.ProtoWebSocket, Method: "GET", Path: "/" + strings.Repeat("p", 119),
				Age: 12345.6, BytesIn: 123456789, BytesOut: 987654321, WaitsFor: drain.WaitUpstreamHeaders},
			{Protocol: drain.ProtoHTTP1, Method: "OPTIONS", Path: "/", Age: 1, WaitsFor: drain.WaitRequestBody},
		}},
	}
	for _, width := range []int{80, 110, 200} {
		screen := renderScreen(st, now, width, 10)
		for line := range strings.Lines(screen) {
			if n := len(strings.TrimSuffix(line, "\n")); n > width {
				t.Errorf("width %d: a line of %d columns:\n%s", width, n, line)
			}
		}
		if !strings.Contains(screen, "[####") || !strings.Contains(screen, "deadline in 27s") {
			t.Errorf("width %d: no progress bar to the deadline:\n%s", width, screen)
		}
	}
}
