package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// deadlineRecorder is a ResponseWriter that records the write deadlines set on it.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	deadlines []time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.deadlines = append(d.deadlines, t)
	return nil
}

// The send timeout is armed before every write that reaches the client: a 1xx at once, a
// final head with the first body write, or, with no body written, as the handler returns
// (finish), when the server sends the head. Not at a final WriteHeader, which writes nothing.
func TestSendTimeoutArmedBeforeTheHeadGoesOut(t *testing.T) {
	p := &Proxy{opts: Options{SendTimeout: time.Minute}}
	r := httptest.NewRequest("GET", "/", nil)
	newWriter := func() (*progressWriter, *deadlineRecorder) {
		d := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
		return &progressWriter{ResponseWriter: d, Context: r.Context(), p: p, r: r}, d
	}

	w, d := newWriter()
	w.WriteHeader(http.StatusEarlyHints)
	if len(d.deadlines) != 1 {
		t.Fatalf("103: %d deadlines set, want 1 (a 1xx goes out at once)", len(d.deadlines))
	}
	w.WriteHeader(http.StatusNoContent)
	if len(d.deadlines) != 1 {
		t.Fatalf("204 head: %d deadlines set, want still 1 (nothing written yet)", len(d.deadlines))
	}
	before := time.Now()
	w.finish()
	if len(d.deadlines) != 2 || d.deadlines[1].Before(before.Add(time.Minute)) {
		t.Fatalf("head only, handler returning: deadlines %v, want a second one a minute from now", d.deadlines)
	}

	w, d = newWriter()
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("x"))
	w.finish()
	if len(d.deadlines) != 1 {
		t.Fatalf("head and body: %d deadlines set, want 1 (the write's)", len(d.deadlines))
	}
}
