package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// recordingWriter is the drain's ResponseWriter as the Guard sees it: it learns why the
// answer did not come from the app.
type recordingWriter struct {
	*httptest.ResponseRecorder
	reason string
	status int
}

func (w *recordingWriter) RecordUpstreamError(reason string, status int, _ error) {
	w.reason, w.status = reason, status
}

// downApp is an app that is not answering.
type downApp struct{}

func (downApp) Answering() bool { return false }
func (downApp) RetryAfter() int { return 3 }

// The Guard's 503 is recorded as drainproxy answering for the app, so that the access log,
// the metrics and the drain's summary count it.
func TestAppGuardRecordsItsAnswer(t *testing.T) {
	w := &recordingWriter{ResponseRecorder: httptest.NewRecorder()}
	AppGuard(downApp{}, http.NotFoundHandler()).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusServiceUnavailable || w.reason != ReasonAppNotRunning || w.status != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "3" {
		t.Fatalf("guard answered %d and recorded %q %d; want 503 recorded as %q", w.Code, w.reason, w.status, ReasonAppNotRunning)
	}
}

// A gRPC call gets a gRPC answer while the app is down: UNAVAILABLE in trailers-only form,
// which gRPC clients report (and retry by policy), not a text 503.
func TestAppGuardAnswersGRPCInKind(t *testing.T) {
	w := &recordingWriter{ResponseRecorder: httptest.NewRecorder()}
	r := httptest.NewRequest("POST", "/pkg.Service/Method", nil)
	r.Header.Set("Content-Type", "application/grpc+proto")
	AppGuard(downApp{}, http.NotFoundHandler()).ServeHTTP(w, r)
	h := w.Header()
	if w.Code != http.StatusOK || h.Get("Content-Type") != "application/grpc" || h.Get("Grpc-Status") != "14" ||
		!strings.Contains(h.Get("Grpc-Message"), "not running") || w.Body.Len() != 0 {
		t.Fatalf("guard answered a gRPC call with %d %v %q; want 200 application/grpc, grpc-status 14, no body", w.Code, h, w.Body)
	}
	if w.reason != ReasonAppNotRunning {
		t.Fatalf("recorded %q, want %q", w.reason, ReasonAppNotRunning)
	}
}
