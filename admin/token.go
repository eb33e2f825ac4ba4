package admin

import "crypto/sha256"

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
