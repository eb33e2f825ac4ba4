package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/standin"
)

// These tests run a whole drainproxy in the test's own process: New and Run as the binary
// calls them, with a context whose cancel is the SIGTERM and Reload as the SIGHUP. What
// needs a process of its own (upgrades, systemd, signals, the exit code of the binary)
// stays in cmd/drainproxy's end-to-end tests.

// running is a drainproxy run in this process.
type running struct {
	t           *testing.T
	inst        *Instance
	stop        context.CancelFunc // starts the drain, as SIGTERM does
	exited      chan struct{}
	code        int // Run's exit code, once exited is closed
	logs        *logLines
	Addr, Admin string // the public and the admin listener, host:port
}

// startInstance builds and runs a drainproxy from the command line args (plus JSON logs at
// debug level) and returns once it logged "ready". The test's end drains it.
func startInstance(t *testing.T, args ...string) *running {
	t.Helper()
	args = append([]string{"-log-format", "json", "-log-level", "debug"}, args...)
	// Only the server engine comes from the test's environment: CI runs the suite on both.
	getenv := func(k string) string {
		if k == "DRAINPROXY_SERVER_ENGINE" {
			return os.Getenv(k)
		}
		return ""
	}
	cfg, err := config.ParseEnv(args, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogLines()
	inst, err := New(cfg, Options{Args: args, Getenv: getenv, Environ: os.Environ(), Stdout: io.Discard, Stderr: logs, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, inst: inst, stop: cancel, exited: make(chan struct{}), logs: logs}
	go func() {
		defer close(r.exited)
		r.code = inst.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return within 30 s of the drain's start")
		}
	})
	start := r.waitLog("drainproxy starting", 20*time.Second)
	r.Addr, _ = start["listen"].(string)
	r.Admin, _ = start["admin"].(string)
	r.waitLog("ready", 20*time.Second)
	return r
}

// wait waits for Run to return and gives its exit code.
func (r *running) wait(timeout time.Duration) int {
	r.t.Helper()
	select {
	case <-r.exited:
		return r.code
	case <-time.After(timeout):
		r.t.Fatalf("Run still running after %v", timeout)
		return -1
	}
}

func (r *running) waitLog(msg string, timeout time.Duration) map[string]any {
	r.t.Helper()
	if m := r.logs.find(msg, timeout); m != nil {
		return m
	}
	r.t.Fatalf("no log line %q within %v; the log:\n%s", msg, timeout, r.logs.String())
	return nil
}

// get is GET path from the admin listener (token: "" for none): status and body.
func (r *running) admin(path, token string) (int, string) {
	r.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.Admin+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metric is the value of one series on /metrics.
func (r *running) metric(token, series string) float64 {
	r.t.Helper()
	code, body := r.admin("/metrics", token)
	if code != http.StatusOK {
		r.t.Fatalf("/metrics = %d", code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		r.t.Fatalf("no %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// logLines is the log as it is written: each JSON line parsed.
type logLines struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []map[string]any
	raw   []string
	grew  chan struct{} // closed and replaced whenever a line arrives
}

func newLogLines() *logLines { return &logLines{grew: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil { // a part line: keep it for the next write
			l.buf.Reset()
			l.buf.WriteString(line)
			break
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			m = map[string]any{"@message": strings.TrimSpace(line)}
		}
		l.lines = append(l.lines, m)
		l.raw = append(l.raw, strings.TrimSpace(line))
	}
	close(l.grew)
	l.grew = make(chan struct{})
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

// find waits for a line whose message is msg; nil when none came in time.
func (l *logLines) find(msg string, timeout time.Duration) map[string]any {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for seen := 0; ; {
		l.mu.Lock()
		for ; seen < len(l.lines); seen++ {
			if l.lines[seen]["@message"] == msg {
				m := l.lines[seen]
				l.mu.Unlock()
				return m
			}
		}
		grew := l.grew
		l.mu.Unlock()
		select {
		case <-grew:
		case <-deadline.C:
			return nil
		}
	}
}

// serveApp serves h on a fresh 127.0.0.1 port until the test ends.
func serveApp(t *testing.T, h http.Handler) (*http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv, ln.Addr().String()
}

// An instance proxies to a real upstream, and canceling Run's context drains it: Run
// returns 0 with nothing in flight, after the drain's summary line.
func TestInstanceProxiesAndDrainsOnCancel(t *testing.T) {
	_, up := serveApp(t, standin.Handler())
	r := startInstance(t, "-upstream", "http://"+up, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0")
	resp, err := http.Get("http://" + r.Addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != standin.Hello {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, standin.Hello)
	}
	r.stop()
	if code := r.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if sum := r.waitLog("drain complete", time.Second); sum["aborted"] != 0.0 {
		t.Fatalf("summary %v: want aborted=0", sum)
	}
}

// The sidecar case: the app is gone while drainproxy still drains. The requests
// drainproxy answers 502 for it are counted in the summary line and in the metrics; the
// exit code stays 0, as documented (the drain itself lost nothing it held).
func TestDrainSummaryCountsUpstreamFailures(t *testing.T) {
	app, up := serveApp(t, standin.Handler())
	r := startInstance(t, "-upstream", "http://"+up, "-drain-delay", "4s", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func() int {
		resp, err := client.Get("http://" + r.Addr + "/")
		if err != nil {
			t.Fatalf("GET /: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("GET / before the drain = %d", code)
	}

	r.stop()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, body := r.admin("/readyz", "")
		if code == http.StatusServiceUnavailable && strings.HasPrefix(body, "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q during the drain; want 503 draining...", code, body)
		}
	}
	app.Close() // the app exits at once on SIGTERM, as a legacy app does
	const failed = 5
	for range failed {
		if code := get(); code != http.StatusBadGateway {
			t.Fatalf("GET / with the app gone = %d, want 502", code)
		}
	}
	if n := r.metric("", "drainproxy_drain_upstream_failed_total"); n != failed {
		t.Errorf("drainproxy_drain_upstream_failed_total = %v during the drain, want %d", n, failed)
	}
	if code := r.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0 (upstream failures do not change it)", code)
	}
	if sum := r.waitLog("drain complete", time.Second); sum["upstream_failed"] != float64(failed) {
		t.Errorf("drain complete %v: want upstream_failed=%d", sum, failed)
	}
	if w := r.logs.find("the app failed requests during the drain: drainproxy answered them 502/503/504 itself; if the app stopped before drainproxy had drained, see the README's sidecar recipes", 0); w == nil || w["upstream_failed"] != float64(failed) {
		t.Errorf("no warning naming the %d failed requests:\n%s", failed, r.logs.String())
	}
}

// appConfig is a config file for the app at upstream, with adminExtra in the admin block
// and extra at the end.
func appConfig(upstream, adminExtra, extra string) string {
	return `listener {
  address = "127.0.0.1:0"
}
admin {
  address = "127.0.0.1:0"
` + adminExtra + `}
upstream {
  url = "http://` + upstream + `"
}
` + extra
}

// Issue 16.1: a configuration that does not parse changes nothing: the error names
// file:line:col, the running configuration keeps serving, and a later good one applies.
// Reload is what SIGHUP calls; here it returns once the reload is done.
func TestReloadWithABadConfigKeepsServing(t *testing.T) {
	_, up := serveApp(t, standin.Handler())
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	write := func(body string) {
		if err := os.WriteFile(cfgPath, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(appConfig(up, "", ""))
	r := startInstance(t, "-config", cfgPath)

	write(appConfig(up, "", "proxy {\n  host_header = \"sometimes\"\n}\n"))
	r.inst.Reload("test")
	m := r.waitLog("the new configuration is invalid: still serving the running one (drainproxy -check shows the same)", 0)
	if e, _ := m["error"].(string); !strings.Contains(e, cfgPath+":11:") || !strings.Contains(e, "host_header") {
		t.Fatalf("the error does not point at %s:11 and host_header: %q", cfgPath, e)
	}
	resp, err := http.Get("http://" + r.Addr + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("not serving after a bad reload: %v %v", resp, err)
	}
	resp.Body.Close()
	loadedAtStart := r.metric("", "drainproxy_config_last_reload_success_timestamp_seconds")
	if failed, last := r.metric("", `drainproxy_config_reloads_total{result="failed"}`),
		r.metric("", "drainproxy_config_last_reload_successful"); failed != 1 || last != 0 {
		t.Fatalf("after a bad reload: config_reloads_total{failed} %v, last_reload_successful %v; want 1 and 0", failed, last)
	}

	// A good configuration then applies: the admin token, in place.
	const tok = "s3cret-token-of-16-chars"
	write(appConfig(up, "  token = \""+tok+"\"\n", ""))
	r.inst.Reload("test")
	if code, _ := r.admin("/status", ""); code != http.StatusUnauthorized {
		t.Fatalf("/status without the reloaded token = %d, want 401", code)
	}
	if code, body := r.admin("/status", tok); code != 200 {
		t.Fatalf("/status with the reloaded token = %d %q", code, body)
	}
	if ok, last, at := r.metric(tok, `drainproxy_config_reloads_total{result="ok"}`),
		r.metric(tok, "drainproxy_config_last_reload_successful"),
		r.metric(tok, "drainproxy_config_last_reload_success_timestamp_seconds"); ok != 1 || last != 1 || at <= loadedAtStart {
		t.Fatalf("after a good reload: config_reloads_total{ok} %v, last_reload_successful %v, loaded at %v (start %v)", ok, last, at, loadedAtStart)
	}
	r.stop()
	if code := r.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// Issue 26 item 7: a setting given by its old name works and is named in one warning at
// start, with its new name and where it was given; a reload that still finds it warns
// once more.
func TestRenamedSettingWarnsOnce(t *testing.T) {
	_, up := serveApp(t, standin.Handler())
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	if err := os.WriteFile(cfgPath, []byte(appConfig(up, "", "limits {\n  read_timeout = \"1m\"\n}\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startInstance(t, "-config", cfgPath)
	const msg = "a setting was given by its old name, which still works for now: rename it"
	warnings := func() (n int, last map[string]any) {
		r.logs.mu.Lock()
		defer r.logs.mu.Unlock()
		for _, l := range r.logs.lines {
			if l["@message"] == msg {
				n, last = n+1, l
			}
		}
		return n, last
	}
	n, w := warnings()
	if n != 1 || w["setting"] != "limits.read_timeout" || w["new_name"] != "limits.request_read_timeout" || w["at"] != cfgPath+":11:3" {
		t.Fatalf("%d warnings, the last %v; want one naming limits.read_timeout, limits.request_read_timeout and %s:11:3", n, w, cfgPath)
	}
	if got := r.inst.cfg.Limits.RequestReadTimeout; got != time.Minute {
		t.Errorf("limits.request_read_timeout = %v from limits.read_timeout = \"1m\"", got)
	}
	r.inst.Reload("test")
	if n, _ := warnings(); n != 2 {
		t.Errorf("%d warnings after a reload, want 2 (one per load)", n)
	}
}
