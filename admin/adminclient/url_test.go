package adminclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -admin, as `drain` and `status` both take it: host:port with a wildcard called on
// loopback, or an http(s) URL; anything else is refused with what to write.
func TestAdminBaseURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:9901", "http://127.0.0.1:9901"},
		{":9901", "http://127.0.0.1:9901"},
		{"0.0.0.0:9901", "http://127.0.0.1:9901"},
		{"[::]:9901", "http://[::1]:9901"},
		{"http://10.0.0.1:9901/", "http://10.0.0.1:9901"},
		{"https://admin.example:9901", "https://admin.example:9901"},
		{"ftp://x:1", ""},
		{"http://x:1/status", ""},
		{"9901", ""},
	} {
		u, err := adminBaseURL(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("adminBaseURL(%q) = %v, want an error", tc.in, u)
		case tc.want != "" && (err != nil || u.String() != tc.want):
			t.Errorf("adminBaseURL(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
}

// The token file's content, trimmed; an empty file is an error, not "no token".
func TestReadAdminToken(t *testing.T) {
	dir := t.TempDir()
	good, empty := filepath.Join(dir, "good"), filepath.Join(dir, "empty")
	os.WriteFile(good, []byte(" s3cret-token\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	if tok, err := readAdminToken(good); err != nil || tok != "s3cret-token" {
		t.Errorf("readAdminToken(good) = %q, %v", tok, err)
	}
	if tok, err := readAdminToken(""); err != nil || tok != "" {
		t.Errorf(`readAdminToken("") = %q, %v; want no token`, tok, err)
	}
	if _, err := readAdminToken(empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("readAdminToken(empty) = %v, want an error saying it is empty", err)
	}
	if _, err := readAdminToken(filepath.Join(dir, "none")); err == nil {
		t.Error("readAdminToken(missing) = nil error")
	}
}
