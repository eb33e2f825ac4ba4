package accesslog

import (
	"encoding/json"
	"testing"
	"time"
)

// Lines follow the upstream a zero-downtime restart switched to, and back.
func TestJSONUpstreamFollowsTheSwitch(t *testing.T) {
	format := jsonAppender("http://127.0.0.1:3000")
	for _, tt := range []struct{ cur, want string }{
		{"", "http://127.0.0.1:3000"},
		{"http://127.0.0.1:3000", "http://127.0.0.1:3000"},
		{"http://127.0.0.1:41234", "http://127.0.0.1:41234"},
		{"http://127.0.0.1:41234", "http://127.0.0.1:41234"},
		{"", "http://127.0.0.1:3000"},
		{"http://127.0.0.1:3000", "http://127.0.0.1:3000"},
	} {
		r := record{start: time.Unix(0, 0), status: 200, upstream: tt.cur}
		var line struct{ Upstream string }
		if err := json.Unmarshal(format(nil, &r), &line); err != nil {
			t.Fatal(err)
		}
		if line.Upstream != tt.want {
			t.Errorf("current upstream %q: line says %q, want %q", tt.cur, line.Upstream, tt.want)
		}
	}
}
