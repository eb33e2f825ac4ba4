package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/standin"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

// trustLoopback is a config file that trusts 127.0.0.1 as a proxy, so that the request ids
// the test clients send are kept and logged instead of replaced.
func trustLoopback(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trust.hcl")
	if err := os.WriteFile(path, []byte("proxy {\n  trusted_proxies = [\"127.0.0.1\"]\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// getWithID sends GET path carrying X-Request-Id: id and reads the whole response.
func (r *rawConn) getWithID(path, id string) (*http.Response, error) {
	req := "GET " + path + " HTTP/1.1\r\nHost: log.test\r\nX-Request-Id: " + id + "\r\n\r\n"
	if _, err := io.WriteString(r.c, req); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return resp, nil
}

// idLoad is keep-alive clients that each send GET / with ids of their own, back to back,
// until the proxy asks them to close (a drain) or limit requests have been sent in all.
// They never reconnect or retry, so every response maps to exactly one request id.
type idLoad struct {
	ok       atomic.Int64 // responses received
	sent     atomic.Int64 // requests claimed
	mu       sync.Mutex
	received []string // ids of the responses received
	failures []error
	wg       sync.WaitGroup
}

func startIDLoad(t *testing.T, addr string, clients int, limit int64) *idLoad {
	l := &idLoad{}
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var ids []string
			defer func() {
				l.mu.Lock()
				l.received = append(l.received, ids...)
				l.mu.Unlock()
			}()
			rc, err := dialRaw(addr, 5*time.Second)
			if err != nil {
				l.fail(err)
				return
			}
			defer rc.Close()
			for l.sent.Add(1) <= limit {
				id := fmt.Sprintf("c%d-%d", c, len(ids))
				resp, err := rc.getWithID("/", id)
				if err != nil {
					l.fail(fmt.Errorf("request %s: %w", id, err))
					return
				}
				ids = append(ids, id)
				l.ok.Add(1)
				if resp.StatusCode != http.StatusOK {
					l.fail(fmt.Errorf("request %s: status %d", id, resp.StatusCode))
				}
				if resp.Close {
					return // the drain began: this client is done
				}
			}
		}()
	}
	t.Cleanup(l.wg.Wait)
	return l
}

func (l *idLoad) fail(err error) {
	l.mu.Lock()
	l.failures = append(l.failures, err)
	l.mu.Unlock()
}

// waitOK waits until n responses have come back.
func (l *idLoad) waitOK(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, 60*time.Second, func() bool { return l.ok.Load() >= n })
}

// finish waits for every client and returns the ids of the responses they received.
func (l *idLoad) finish(t *testing.T) []string {
	t.Helper()
	l.wg.Wait()
	if len(l.failures) > 0 {
		t.Fatalf("%d requests failed, the first: %v", len(l.failures), l.failures[0])
	}
	return l.received
}

// sameIDs checks that the logged lines are exactly one per received id.
func sameIDs(t *testing.T, received []string, lines []map[string]any) {
	t.Helper()
	want := make(map[string]bool, len(received))
	for _, id := range received {
		want[id] = true
	}
	logged := make(map[string]bool, len(lines))
	for _, m := range lines {
		id, _ := m["request_id"].(string)
		if logged[id] {
			t.Fatalf("id %q logged twice", id)
		}
		logged[id] = true
		if !want[id] {
			t.Fatalf("line %v: no client received a response with that id", m)
		}
	}
	if len(lines) != len(received) {
		t.Fatalf("%d lines logged for %d responses received", len(lines), len(received))
	}
}

// 50,000 requests from concurrent keep-alive clients, SIGTERM in the middle of the load:
// after the exit, the file has exactly one line per response the clients received, each
// with the request's id, and the closing line says nothing was dropped.
func TestAccessLogHasALinePerResponseAfterSIGTERM(t *testing.T) {
	up := startUpstream(t)
	path := filepath.Join(t.TempDir(), "access.log")
	p := startProxy(t, "-config", trustLoopback(t), "-listen", "127.0.0.1:0", "-admin", "off",
		"-upstream", up, "-access-log", path)
	load := startIDLoad(t, p.Addr, 8, 1_000_000)
	load.waitOK(t, 50_000)
	p.Signal(syscall.SIGTERM) // with requests in flight
	received := load.finish(t)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}

	lines := testlog.JSONLines(t, path)
	sameIDs(t, received, lines)
	for _, m := range lines {
		if m["status"] != 200.0 || m["method"] != "GET" || m["path"] != "/" || m["upstream"] != up ||
			m["bytes_out"] != float64(len(standin.Hello)) || m["host"] != "log.test" {
			t.Fatalf("line %v: want GET / 200 with %d bytes out from %s", m, len(standin.Hello), up)
		}
	}
	closed := p.WaitLog("access log closed", time.Second)
	if closed["written"] != float64(len(received)) || closed["dropped"] != 0.0 || closed["write_errors"] != 0.0 {
		t.Fatalf("closing line %v: want written=%d dropped=0 write_errors=0", closed, len(received))
	}
	t.Logf("%d responses, %d lines", len(received), len(lines))
}

// logrotate's create mode under load: rename the file, SIGUSR1, keep going. The old and
// the new file together hold exactly one line per response.
func TestAccessLogReopenUnderLoadLosesNothing(t *testing.T) {
	up := startUpstream(t)
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
	p := startProxy(t, "-config", trustLoopback(t), "-listen", "127.0.0.1:0", "-admin", "off",
		"-upstream", up, "-access-log", path)
	load := startIDLoad(t, p.Addr, 4, 1_000_000)
	load.waitOK(t, 3_000)
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGUSR1)
	p.WaitLog("access log reopened", 10*time.Second)
	atReopen := load.ok.Load()
	load.waitOK(t, atReopen+3_000)
	p.Signal(syscall.SIGTERM)
	received := load.finish(t)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}

	old, cur := testlog.JSONLines(t, rotated), testlog.JSONLines(t, path)
	if len(old) == 0 || len(cur) == 0 {
		t.Fatalf("%d lines in the rotated file, %d in the new one: want both written", len(old), len(cur))
	}
	sameIDs(t, received, append(old, cur...))
	t.Logf("%d responses: %d lines before the reopen, %d after", len(received), len(old), len(cur))
}

// A destination that cannot be opened stops drainproxy before it serves, with one line
// naming the path and the reason.
func TestAccessLogUnwritableDestinationStopsStartup(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ path, why string }{
		{filepath.Join(dir, "no", "such", "dir", "access.log"), "no such file or directory"},
		{dir, "is a directory"},
	} {
		code, out := runBinary(t, "-upstream", "http://127.0.0.1:1", "-listen", "127.0.0.1:0", "-admin", "off",
			"-log-format", "text", "-access-log", tt.path)
		if code != 1 {
			t.Errorf("-access-log %s: exit code %d, want 1\n%s", tt.path, code, out)
		}
		if !regexp.MustCompile(`cannot open the access log: .*` + regexp.QuoteMeta(tt.path) + `.*` + tt.why).MatchString(out) {
			t.Errorf("-access-log %s: output does not name the path and %q:\n%s", tt.path, tt.why, out)
		}
		if strings.Contains(out, "drainproxy starting") {
			t.Errorf("-access-log %s: started anyway:\n%s", tt.path, out)
		}
	}
}

// get sends n GET / requests through the proxy, failing the test on any other answer
// than 200.
func get(t *testing.T, p *proc, n int) {
	t.Helper()
	for range n {
		resp, err := http.Get(p.URL() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}
}

// The default destination is stdout, apart from the operational logs on stderr; the
// proxy gives each request an id and logs it.
func TestAccessLogGoesToStdoutByDefault(t *testing.T) {
	up := startUpstream(t)
	var stdout bytes.Buffer // written by exec's copier; read only after the process exits
	p := launchWithStdout(t, &stdout, "-upstream", up)
	p.WaitLog("ready", 20*time.Second)
	get(t, p, 3)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("stdout has %d lines, want 3:\n%s", len(lines), stdout.String())
	}
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		if id, _ := m["request_id"].(string); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
			t.Errorf("line %q: want a generated 32-hex-digit request id", line)
		}
	}
	if strings.Contains(p.Logs(), `"request_id"`) {
		t.Errorf("access lines on stderr:\n%s", p.Logs())
	}
}

// A failing destination (a full disk: /dev/full) and one whose reader went away (a closed
// pipe, which would otherwise kill the process with SIGPIPE) cost the requests nothing: they
// all succeed, the lost lines are counted and the process drains and exits 0.
func TestAccessLogWriteFailuresNeitherBlockNorCrash(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	brokenPipe := func(t *testing.T) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		t.Cleanup(func() { w.Close() })
		return w
	}
	for _, tt := range []struct {
		name   string
		stdout func(t *testing.T) *os.File
		dest   string
		why    string
	}{
		{"disk full", func(*testing.T) *os.File { return nil }, "/dev/full", "no space left on device"},
		{"stdout reader gone", brokenPipe, "stdout", "broken pipe"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout io.Writer = io.Discard
			if f := tt.stdout(t); f != nil {
				stdout = f
			}
			p := launchWithStdout(t, stdout, "-upstream", startUpstream(t), "-access-log", tt.dest)
			p.WaitLog("ready", 20*time.Second)
			// More than fill a pipe's buffer and the writer's 64 KiB, several flushes' worth.
			const n = 300
			get(t, p, n)
			p.Signal(syscall.SIGTERM)
			if code := p.Wait(10 * time.Second); code != 0 {
				t.Fatalf("exit code %d, want 0", code)
			}
			failed := p.WaitLog("cannot write the access log; its lines are lost until writing works again", time.Second)
			if e, _ := failed["error"].(string); !strings.Contains(e, tt.why) {
				t.Errorf("error line %v: want %q", failed, tt.why)
			}
			closed := p.WaitLog("access log closed", time.Second)
			if closed["write_errors"] != float64(n) || closed["written"] != 0.0 {
				t.Errorf("closing line %v: want write_errors=%d written=0", closed, n)
			}
		})
	}
}

// An upgraded connection (WebSocket) gets its line when it closes, covering its whole life
// and the bytes that crossed it.
func TestAccessLogLineForWebSocketWhenItCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	p := startProxy(t, "-upstream", startUpstream(t), "-access-log", path)
	ws := dialWS(t, p)
	echoWS(t, ws, "hello")
	const held = 200 * time.Millisecond
	time.Sleep(held) // the connection's life, which the line's duration must cover
	echoWS(t, ws, "again")
	ws.Close()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	lines := testlog.JSONLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1: %v", len(lines), lines)
	}
	m := lines[0]
	if m["status"] != 101.0 || m["upgraded"] != true || m["path"] != "/ws" {
		t.Errorf("line %v: want status 101, upgraded, path /ws", m)
	}
	// Each echo is a small frame each way: a few bytes more than the 10 bytes of text.
	if in, out := m["bytes_in"].(float64), m["bytes_out"].(float64); in < 10 || out < 10 {
		t.Errorf("line %v: want the frames counted in both directions", m)
	}
	if d, _ := m["duration_ms"].(float64); d < float64(held.Milliseconds()) {
		t.Errorf("line %v: duration under the %v the connection was held", m, held)
	}
}
