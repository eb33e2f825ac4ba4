package proxy

import (
	"errors"
	"net/http"
	"strconv"
)

// AppState is what AppGuard needs of a supervised app (supervise.Supervisor, supervise.App).
type AppState interface {
	// Answering reports whether the app is running and has answered since it (re)started.
	Answering() bool
	// RetryAfter is the whole seconds until the app's next planned start, at least 1.
	RetryAfter() int
}

// ReasonAppNotRunning is AppGuard's upstream error reason (ErrorRecorder): the request got
// 503 because the app was down or had not answered since it restarted. The access log, the
// metrics and the drain's summary count it as a request drainproxy answered for the app.
const ReasonAppNotRunning = "app_not_running"

var errAppNotRunning = errors.New("the app is not running, or has not answered since it restarted")

// AppGuard answers 503 with Retry-After while app is not answering (down, or restarted and
// not answering yet), and passes requests to next otherwise; gRPC calls get UNAVAILABLE in
// a gRPC answer instead. Put it in front of the proxy, inside the drain's request
// accounting, so that its answers are recorded.
func AppGuard(app AppState, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if app.Answering() {
			next.ServeHTTP(w, r)
			return
		}
		if rec := recorderOf(w); rec != nil {
			rec.RecordUpstreamError(ReasonAppNotRunning, http.StatusServiceUnavailable, errAppNotRunning)
		}
		w.Header().Set("Retry-After", strconv.Itoa(app.RetryAfter()))
		const msg = "the app behind this proxy is not running right now; retry shortly"
		if IsGRPC(r) {
			// A text 503 would reach a gRPC client as "unexpected HTTP status code".
			WriteGRPCError(w, GRPCUnavailable, "drainproxy: "+msg)
			return
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
	})
}
