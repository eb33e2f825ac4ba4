package admin

import (
	"crypto/sha256"
	"net/http"
	"sync"
	"time"
)

// SetToken replaces the bearer token (a configuration reload): requests from now on need
// the new one; "" lets them through without one, as at Start.
func (s *Server) SetToken(token string) {
	t := &tokenCheck{set: token != ""}
	if t.set {
		t.sum = sha256.Sum256([]byte(token))
	}
	s.token.Store(t)
}

// tokenCheck is the token as authorized compares it: only its hash is kept.
type tokenCheck struct {
	set bool
	sum [sha256.Size]byte
}

// Token failures are slowed and logged: each waits tokenFailureDelay, one at a time, so
// that guesses go at most 1/tokenFailureDelay a second whatever the concurrency (there
// were 10,220 a second, unlogged); and one warning per tokenFailureLogEvery names the
// client and counts the failures since the last one.
const (
	tokenFailureDelay    = 100 * time.Millisecond
	tokenFailureLogEvery = 10 * time.Second
)

type tokenFailures struct {
	slow    sync.Mutex // held for tokenFailureDelay by each failure
	mu      sync.Mutex
	lastLog time.Time
	quiet   int // failures since the last line
}

// tokenFailed logs (rate-limited) and slows down a request with a missing or wrong token.
func (s *Server) tokenFailed(r *http.Request) {
	f := &s.failures
	f.mu.Lock()
	f.quiet++
	if now := time.Now(); now.Sub(f.lastLog) >= tokenFailureLogEvery {
		s.log.Warn("admin request without the right token; answered 401", "client", r.RemoteAddr,
			"method", r.Method, "path", r.URL.Path, "failures_since_last_line", f.quiet)
		f.lastLog, f.quiet = now, 0
	}
	f.mu.Unlock()
	f.slow.Lock()
	defer f.slow.Unlock()
	t := time.NewTimer(tokenFailureDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
