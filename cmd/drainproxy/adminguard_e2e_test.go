package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The built binary with admin { allowed_hosts }: a configured name is answered, a
// rebinding name is not, and a cross-site form post does not drain the process.
func TestAdminRefusesWebPages(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.hcl")
	src := "upstream {\n  url = \"" + startUpstream(t) + "\"\n}\nadmin {\n  address = \"127.0.0.1:0\"\n  allowed_hosts = [\"admin.internal\"]\n}\n"
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, "-config", cfg, "-listen", "127.0.0.1:0")
	send := func(method, path, host string, header ...string) int {
		req, _ := http.NewRequest(method, "http://"+p.Admin+path, nil)
		req.Host = host
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		if req.Header.Get("Content-Type") != "" {
			req.Body = http.NoBody
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		method, path, host string
		header             []string
		want               int
	}{
		{"GET", "/status", "admin.internal:9901", nil, 200},
		{"GET", "/status", "evil.example", nil, 403},
		{"GET", "/metrics", "evil.example", nil, 403},
		{"GET", "/readyz", "10.1.2.3:9901", nil, 200},
		{"POST", "/drain", "", []string{"Origin", "http://evil.example", "Content-Type", "text/plain"}, 403},
		{"POST", "/drain", "", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415},
	} {
		host := tt.host
		if host == "" {
			host = p.Admin
		}
		if code := send(tt.method, tt.path, host, tt.header...); code != tt.want {
			t.Errorf("%s %s Host %q %v = %d, want %d", tt.method, tt.path, host, tt.header, code, tt.want)
		}
	}
	adminWaitReadyz(t, p, 200, "ready") // nothing above drained it
	if strings.Contains(p.Logs(), "drain started") {
		t.Fatal("a refused request started a drain")
	}
}
