package admin

import (
	"fmt"
	"net/http"
	"time"

	"github.com/drainproxy/drainproxy/drain"
)

// DrainWaiter is what GET /drained needs of the drain (drain.Drainer).
type DrainWaiter interface {
	// Requested is closed once a drain has begun.
	Requested() <-chan struct{}
	// Waited is closed once the drain has finished waiting for in-flight requests.
	Waited() <-chan struct{}
}

// The bounds of GET /drained, and how long a hook may ask them to be. begin_within is
// waited for with no drain under way, by anyone (the endpoint needs no token): above
// drainedMaxBeginWithin it is cut to that, so that nobody holds a connection for long
// while nothing happens. At most maxDrainedWaits calls wait at once; more are answered
// 503 at once (a pod has a few containers, each with one hook).
const (
	drainedBeginWithin    = 2 * time.Second
	drainedMaxBeginWithin = 5 * time.Second
	drainedTimeout        = 60 * time.Second
	drainedMaxWait        = 10 * time.Minute
	maxDrainedWaits       = 32
)

// drained serves GET /drained, the preStop hook of an app container that has drainproxy
// in front of it in the same pod (kubelet's httpGet hook: no binary of ours in the app's
// image). Kubelet runs every container's preStop and then sends it SIGTERM, all containers
// in parallel; without the hook an app that exits at once on SIGTERM is gone while the
// proxy still sends it requests.
//
//   - A drain under way: the answer waits until the drain has finished waiting for
//     in-flight requests (200 "drained"), so the app gets its SIGTERM only then; 503 if
//     that takes longer than ?timeout= (60s; kubelet then goes on with the SIGTERM).
//   - No drain: kubelet sends the hook and drainproxy's SIGTERM at the same moment, so the
//     hook can arrive first. The answer waits up to ?begin_within= (2s) for a drain to
//     begin, then answers 200 "not draining": a liveness restart of the app alone, with
//     drainproxy staying up, is held up by no more than that.
//   - After the drain (phase stopped): 200 at once.
func (s *Server) drained(w http.ResponseWriter, r *http.Request) {
	dw, ok := s.opts.Drainer.(DrainWaiter)
	if !ok {
		plain(w, http.StatusNotImplemented, "this drainer cannot report the end of a drain")
		return
	}
	beginWithin, err := durationParam(r, "begin_within", drainedBeginWithin)
	if err != nil {
		plain(w, http.StatusBadRequest, err.Error())
		return
	}
	beginWithin = min(beginWithin, drainedMaxBeginWithin)
	timeout, err := durationParam(r, "timeout", drainedTimeout)
	if err != nil {
		plain(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.drainedWaits.Add(1) > s.drainedWaitCap() {
		s.drainedWaits.Add(-1)
		s.log.Warn("GET /drained: too many calls waiting; answered 503", "max", s.drainedWaitCap(), "client", r.RemoteAddr)
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf("more than %d calls of /drained wait already", s.drainedWaitCap()))
		return
	}
	defer s.drainedWaits.Add(-1)
	// The admin server's write timeout is shorter than a drain can be.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(beginWithin + timeout + 5*time.Second))

	if !drain.Closed(dw.Requested()) { // checked first: select would pick at random between ready cases
		begin := time.NewTimer(beginWithin)
		defer begin.Stop()
		select {
		case <-dw.Requested():
		case <-begin.C:
			plain(w, http.StatusOK, "not draining")
			return
		case <-r.Context().Done():
			return
		}
	}
	if drain.Closed(dw.Waited()) {
		plain(w, http.StatusOK, "drained")
		return
	}
	s.log.Debug("GET /drained: waiting for the drain to finish", "client", r.RemoteAddr, "timeout", timeout.String())
	started := time.Now()
	bound := time.NewTimer(timeout)
	defer bound.Stop()
	select {
	case <-dw.Waited():
		if d := time.Since(started); d > 100*time.Millisecond {
			s.log.Info("GET /drained answered: the drain has finished waiting", "client", r.RemoteAddr, "waited", d.Round(time.Millisecond).String())
		}
		plain(w, http.StatusOK, "drained")
	case <-bound.C:
		s.log.Warn("GET /drained: the drain is still waiting; answering 503 so that the hook ends", "client", r.RemoteAddr, "timeout", timeout.String())
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf("still %s after %s", s.opts.Drainer.Stats().Phase, timeout))
	case <-r.Context().Done():
	}
}

// waitDrained serves /status?wait_drained=DUR: it holds the answer until the drain has
// finished waiting (the document then has its outcome) or DUR has passed. A watcher keeps
// one such request open, so that it learns the outcome even when the process exits right
// after: the admin listener's Stop lets a request in progress finish. It reports false
// when it has answered (a bad parameter) or the client left.
func (s *Server) waitDrained(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Query().Get("wait_drained") == "" {
		return true
	}
	wait, err := durationParam(r, "wait_drained", 0)
	if err != nil {
		plain(w, http.StatusBadRequest, err.Error())
		return false
	}
	dw, ok := s.opts.Drainer.(DrainWaiter)
	if !ok {
		return true
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + 5*time.Second))
	bound := time.NewTimer(wait)
	defer bound.Stop()
	select {
	case <-dw.Waited():
	case <-bound.C:
	case <-r.Context().Done():
		return false
	}
	return true
}

// durationParam reads a query parameter that holds a Go duration, within [0, drainedMaxWait].
func durationParam(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > drainedMaxWait {
		return 0, fmt.Errorf("%s=%q: want a duration from 0s to %s, such as 2s", name, v, drainedMaxWait)
	}
	return d, nil
}

// drainedWaitCap is how many /drained calls may wait at once: maxDrainedWaits, and never
// more than a quarter of the admin connections, so that probes always find room.
func (s *Server) drainedWaitCap() int64 { return int64(min(maxDrainedWaits, max(s.maxConns/4, 1))) }
