package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Issue 23, item 7: with an upstream base path, a request path that would climb above it
// once the app resolves its dot segments is refused (400), however it is spelled; one
// that stays under it is passed on.
func TestBasePathClimbRefused(t *testing.T) {
	up, _ := inlineUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "app saw "+r.URL.EscapedPath())
	}))
	base := *up
	base.Path = "/api"
	_, front, _ := inlineFront(t, Options{Upstream: &base})
	addr := strings.TrimPrefix(front, "http://")
	for _, target := range []string{"/../admin", "/%2e%2e/admin", "/%2E%2E/admin", "/..%2fadmin", "/a/../../admin", "/..;/admin", "/./../admin"} {
		if status := rawExchange(t, addr, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n", false); status != http.StatusBadRequest {
			t.Errorf("GET %s under base path /api: %d, want 400", target, status)
		}
	}
	for _, target := range []string{"/a/../b", "/x..y/z", "/..a/b"} {
		if status := rawExchange(t, addr, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n", false); status != http.StatusOK {
			t.Errorf("GET %s under base path /api: %d, want 200 (it stays under /api)", target, status)
		}
	}
	// Without a base path, the app's own resolution of dots is its business.
	_, front, _ = inlineFront(t, Options{Upstream: up})
	if status := rawExchange(t, strings.TrimPrefix(front, "http://"), "GET /../x HTTP/1.1\r\nHost: x\r\n\r\n", false); status != http.StatusOK {
		t.Errorf("GET /../x without a base path: %d, want 200", status)
	}
}
