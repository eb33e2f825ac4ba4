package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/admin"
)

// drainproxy probe: 0 on 2xx, 1 on anything else (including a redirect and no answer in
// time), 2 on bad usage; one line on stderr that says why.
func TestProbe(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("/draining", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{srv.URL + "/ok"}, 0, ""},
		{[]string{srv.URL + "/draining"}, 1, "503 Service Unavailable: draining"},
		{[]string{srv.URL + "/moved"}, 1, "302 Found"},
		{[]string{"-timeout", "200ms", srv.URL + "/hang"}, 1, "no answer within 200ms"},
		{[]string{"http://127.0.0.1:1/readyz"}, 1, "connection refused"},
		{[]string{}, 2, "want exactly one URL"},
		{[]string{"127.0.0.1:9901/readyz"}, 2, "is not an http:// or https:// URL"},
		{[]string{"-timeout", "0s", srv.URL + "/ok"}, 2, "must be more than 0"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"probe"}, tt.args...), os.Getenv, &stdout, &stderr)
		if code != tt.code || (tt.stderr == "") != (stderr.Len() == 0) || !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("probe %v = %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.stderr)
		}
	}
}

// drainproxy install copies the running binary (here: the built one) to a file, or into
// a directory, and the copy runs.
func TestInstall(t *testing.T) {
	dir := t.TempDir()
	for _, dest := range []string{filepath.Join(dir, "bin-file"), dir} {
		out, err := exec.Command(binary, "install", dest).CombinedOutput()
		if err != nil {
			t.Fatalf("install %s: %v: %s", dest, err, out)
		}
		installed := dest
		if dest == dir {
			installed = filepath.Join(dir, "drainproxy")
		}
		if !strings.Contains(string(out), "installed at "+installed) {
			t.Errorf("install %s said %q", dest, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		v, err := exec.CommandContext(ctx, installed, "-version").CombinedOutput()
		cancel()
		if err != nil || !strings.HasPrefix(string(v), "drainproxy ") {
			t.Errorf("the installed copy does not run: %v: %s", err, v)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".drainproxy-install-") {
			t.Errorf("a temporary file was left behind: %s", e.Name())
		}
	}
	if out, err := exec.Command(binary, "install", filepath.Join(dir, "no-such-dir", "x")).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "cannot write to") {
		t.Errorf("install into a missing directory: %v %q; want a failure that names the directory", err, out)
	}
}

// Issue 24.11: -admin's help names every admin endpoint (admin.Endpoints is what the
// admin listener serves).
func TestAdminHelpListsEveryEndpoint(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out, &out); code != 0 {
		t.Fatalf("-h exit code %d", code)
	}
	help := out.String()
	i := strings.Index(help, "-admin ADDR")
	if i < 0 {
		t.Fatalf("no -admin in:\n%s", help)
	}
	adminHelp := help[i:]
	if j := strings.Index(adminHelp[1:], "\n  -"); j > 0 {
		adminHelp = adminHelp[:j+1]
	}
	for _, e := range admin.Endpoints() {
		if !strings.Contains(adminHelp, e) {
			t.Errorf("-admin's help does not name %q:\n%s", e, adminHelp)
		}
	}
}

// go install ...@v1.2.3 leaves main.version at "dev": -version then prints the module
// version and the commit the toolchain recorded; -ldflags values win.
func TestBuildVersion(t *testing.T) {
	info := func(v string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Version: v}, Settings: settings}, true
		}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	for _, tt := range []struct {
		version, commit string
		read            func() (*debug.BuildInfo, bool)
		want            string
	}{
		{"dev", "", info("v1.2.3"), "v1.2.3 unknown"},
		{"dev", "", info("(devel)", rev), "dev 0123456789ab"},
		{"v2.0.0", "abc1234", info("v1.2.3", rev), "v2.0.0 abc1234"},
		{"dev", "", func() (*debug.BuildInfo, bool) { return nil, false }, "dev unknown"},
	} {
		v, c := buildVersion(tt.version, tt.commit, tt.read)
		if got := v + " " + c; got != tt.want {
			t.Errorf("buildVersion(%q, %q) = %q, want %q", tt.version, tt.commit, got, tt.want)
		}
	}
}
