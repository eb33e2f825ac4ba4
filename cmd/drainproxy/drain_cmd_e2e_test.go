package main

// End-to-end tests of `drainproxy drain` (drain_cmd.go), the preStop hook of drainproxy as
// a Kubernetes native sidecar, and of drain.readiness_fail_delay: the built binary, real
// processes, real signals.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

// drainRun is a `drainproxy drain` process.
type drainRun struct {
	done           chan struct{}
	code           int
	stdout, stderr bytes.Buffer
}

// startDrainCommand runs `drainproxy drain args...` in the background.
func startDrainCommand(t *testing.T, args ...string) *drainRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, binary, append([]string{"drain"}, args...)...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	r := &drainRun{done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			r.code = -1
		}
		close(r.done)
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *drainRun) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(timeout):
		t.Fatalf("drainproxy drain still running after %s", timeout)
		return -1
	}
}

// getAsync GETs url in the background and sends "BODY STATUS" or the error.
func getAsync(url string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			ch <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- strings.TrimSpace(string(body)) + " " + http.StatusText(resp.StatusCode)
	}()
	return ch
}

// holdingUpstream serves the stand-in, and GET /hold answers only once release is closed.
func holdingUpstream(t *testing.T) (url string, arrived <-chan struct{}, release func()) {
	t.Helper()
	arrivedCh, releaseCh := make(chan struct{}, 16), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(releaseCh) }) }
	t.Cleanup(release)
	mux := http.NewServeMux()
	mux.Handle("/", standin.Handler())
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		arrivedCh <- struct{}{}
		select {
		case <-releaseCh:
			io.WriteString(w, "held and answered")
		case <-r.Context().Done():
		}
	})
	return "http://" + serveUpstream(t, mux), arrivedCh, release
}

// The native-sidecar preStop: `drainproxy drain -wait` starts the drain, returns only once
// the request in flight has been answered, and then drainproxy stays up (serving nothing,
// /readyz 503, admin up) until its own SIGTERM, when it exits at once with code 0.
func TestDrainCommandWaitsAndHolds(t *testing.T) {
	up, arrived, release := holdingUpstream(t)
	p := startProxy(t, "-upstream", up, "-drain-delay", "500ms", "-grace", "30s")

	slow := getAsync(p.URL() + "/hold")
	<-arrived

	dr := startDrainCommand(t, "-admin", p.Admin, "-wait")
	started := p.WaitLog("drain started", 20*time.Second)
	if started["reason"] != "admin POST /drain?hold=true" {
		t.Errorf("drain started with reason %v", started["reason"])
	}
	p.WaitLog("stopped accepting", 20*time.Second)
	select {
	case <-dr.done:
		t.Fatalf("drainproxy drain -wait returned (exit %d, %q %q) while a request was still in flight", dr.code, dr.stdout.String(), dr.stderr.String())
	case <-time.After(300 * time.Millisecond):
	}

	release()
	if got := <-slow; got != "held and answered OK" {
		t.Errorf("the request in flight got %q", got)
	}
	if code := dr.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("drainproxy drain -wait exited %d: %s", code, dr.stderr.String())
	}
	if out := dr.stdout.String(); !strings.HasPrefix(out, "drained") {
		t.Errorf("drainproxy drain -wait printed %q", out)
	}
	if dr.stderr.Len() != 0 {
		t.Errorf("drainproxy drain -wait wrote to stderr: %q", dr.stderr.String())
	}

	// Held: the drain is over, the process is not.
	p.WaitLog("drained; serving nothing and holding until SIGTERM (the drain was asked with hold)", 20*time.Second)
	select {
	case <-p.Exited():
		t.Fatalf("drainproxy exited (code %d) after a drain asked with hold, before its SIGTERM", p.exitCode)
	case <-time.After(500 * time.Millisecond):
	}
	if code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/readyz", ""); code != 503 {
		t.Errorf("/readyz while holding = %d %q, want 503", code, body)
	}
	if code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/healthz", ""); code != 200 {
		t.Errorf("/healthz while holding = %d %q, want 200 (a liveness probe must not restart the held sidecar)", code, body)
	}
	if code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/drained", ""); code != 200 || body != "drained\n" {
		t.Errorf("/drained while holding = %d %q, want 200 drained at once", code, body)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("the public listener %s accepts a connection while holding: it should serve nothing", p.Addr)
	}
	// Asking again while held changes nothing.
	if again := startDrainCommand(t, "-admin", p.Admin, "-wait"); again.wait(t, 20*time.Second) != 0 {
		t.Errorf("a second drainproxy drain -wait while holding exited %d: %s", again.code, again.stderr.String())
	}

	sent := time.Now()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after the held drain's SIGTERM, want 0 (the drain's)", code)
	}
	t.Logf("exited %s after SIGTERM", p.exitedAt.Sub(sent).Round(time.Millisecond))
	if p.FindLog("hold over: exiting", time.Second) == nil {
		t.Error("no \"hold over: exiting\" line")
	}
	if p.FindLog("forcing the drain: closing whatever is still open", 0) != nil {
		t.Error("the SIGTERM that ends the hold forced a drain")
	}
}

// A SIGTERM that came before `drainproxy drain -wait` (the drain under way is a plain
// one): the hold is not needed, the process exits when the drain is over, and the command
// still learns that the drain finished before the admin listener closes.
func TestDrainCommandAfterSignal(t *testing.T) {
	up, arrived, release := holdingUpstream(t)
	p := startProxy(t, "-upstream", up, "-drain-delay", "200ms", "-grace", "30s")
	slow := getAsync(p.URL() + "/hold")
	<-arrived
	p.Signal(syscall.SIGTERM)
	p.WaitLog("stopped accepting", 20*time.Second)
	dr := startDrainCommand(t, "-admin", p.Admin, "-wait")
	p.WaitLog("GET /drained: waiting for the drain to finish", 20*time.Second)
	release()
	if code := dr.wait(t, 20*time.Second); code != 0 {
		t.Errorf("drainproxy drain -wait exited %d: %s", code, dr.stderr.String())
	}
	if got := <-slow; got != "held and answered OK" {
		t.Errorf("the request in flight got %q", got)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("drainproxy exited %d, want 0", code)
	}
	if p.FindLog("the drain was asked to hold, but a signal has come already: exiting", time.Second) == nil {
		t.Error("drainproxy did not say why it did not hold")
	}
}

// Every way the command fails says why in exactly one line and exits 1; bad usage exits 2.
func TestDrainCommandFailures(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	wrongFile := filepath.Join(dir, "wrong")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token-for-the-drain-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongFile, []byte("not-the-token-at-all-but-long\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up, arrived, release := holdingUpstream(t)
	cfg := adminConfigFile(t, `
upstream {
  url = "`+up+`"
}
listener {
  address = "127.0.0.1:0"
}
admin {
  address = "127.0.0.1:0"
  token_file = "`+tokenFile+`"
}
drain {
  grace = "30s"
}
`)
	p := startProxy(t, "-config", cfg)

	oneLine := func(t *testing.T, name string, dr *drainRun, want int, contains string) {
		t.Helper()
		if code := dr.wait(t, 30*time.Second); code != want {
			t.Errorf("%s: exit %d, want %d (stderr %q)", name, code, want, dr.stderr.String())
		}
		msg := dr.stderr.String()
		if want == exitFailure && strings.Count(msg, "\n") != 1 {
			t.Errorf("%s: stderr is not one line: %q", name, msg)
		}
		if !strings.Contains(msg, contains) {
			t.Errorf("%s: stderr %q does not say %q", name, msg, contains)
		}
	}
	oneLine(t, "unreachable", startDrainCommand(t, "-admin", freeAddr(t), "-wait"), 1, "refused the connection")
	oneLine(t, "no token", startDrainCommand(t, "-admin", p.Admin, "-wait"), 1, "401 Unauthorized: the admin listener has a token; pass its file with -token-file")
	oneLine(t, "wrong token", startDrainCommand(t, "-admin", p.Admin, "-token-file", wrongFile), 1, "the token in "+wrongFile+" is not the admin listener's")
	oneLine(t, "missing token file", startDrainCommand(t, "-admin", p.Admin, "-token-file", filepath.Join(dir, "none")), 1, "no such file")
	oneLine(t, "extra argument", startDrainCommand(t, "now"), 2, `unexpected argument "now"`)
	oneLine(t, "not an address", startDrainCommand(t, "-admin", "ftp://"+p.Admin), 2, "want host:port")
	adminWaitReadyz(t, p, 200, "ready\n") // nothing above started a drain

	slow := getAsync(p.URL() + "/hold")
	<-arrived
	oneLine(t, "timeout", startDrainCommand(t, "-admin", p.Admin, "-token-file", tokenFile, "-wait", "-timeout", "1500ms"), 1,
		"timeout: the drain had not finished after -timeout 1.5s")
	release()
	if got := <-slow; got != "held and answered OK" {
		t.Errorf("the request in flight got %q", got)
	}
	p.Signal(syscall.SIGTERM) // the held drain's own SIGTERM
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("drainproxy exited %d, want 0", code)
	}
}

// drain.readiness_fail_delay: /readyz stays 200 for that long after the signal while
// responses already carry "Connection: close"; then 503 while the delay still serves.
func TestReadinessFailDelay(t *testing.T) {
	for _, tt := range []struct {
		name      string
		args      []string
		heldReady bool
	}{
		{"readiness_fail_delay=3s", []string{"-readiness-fail-delay", "3s"}, true},
		{"default", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, append([]string{"-upstream", startUpstream(t), "-drain-delay", "6s"}, tt.args...)...)
			adminWaitReadyz(t, p, 200, "ready\n")
			p.Signal(syscall.SIGTERM)
			began := time.Now()
			p.WaitLog("drain started", 10*time.Second)

			code, _, body := adminDo(t, "GET", "http://"+p.Admin+"/readyz", "")
			asked := time.Since(began)
			resp, err := http.Get(p.URL() + "/")
			if err != nil {
				t.Fatalf("GET / during the delay: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !resp.Close {
				t.Errorf("a response during the drain has no Connection: close (header %v)", resp.Header)
			}
			if !tt.heldReady {
				if code != 503 || body != "draining\n" {
					t.Errorf("/readyz right after the signal = %d %q, want 503 draining at once", code, body)
				}
				p.Wait(20 * time.Second)
				return
			}
			if asked < 3*time.Second && code != 200 {
				t.Errorf("/readyz %s after the signal = %d %q, want 200 for readiness_fail_delay (3s)", asked.Round(time.Millisecond), code, body)
			}
			adminWaitReadyz(t, p, 503, "draining\n") // and still in the delay: the listener accepts
			if since := time.Since(began); since < 3*time.Second {
				t.Errorf("/readyz turned 503 %s after the signal, before readiness_fail_delay (3s)", since.Round(time.Millisecond))
			}
			if p.FindLog("drain delay over", 0) != nil {
				t.Error("the delay ended before /readyz turned 503")
			}
			if code := p.Wait(20 * time.Second); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			if st := p.FindLog("drain started", 0); st["readiness_fail_delay"] != "3s" {
				t.Errorf("the drain started line says readiness_fail_delay=%v", st["readiness_fail_delay"])
			}
		})
	}
}

// A drain whose deadline cut a request is no "drained": `drainproxy drain -wait` says so
// in one line and exits 1, as drainproxy itself will (exit_code=1), instead of printing
// "drained" and exiting 0.
func TestDrainCommandReportsAbortedRequests(t *testing.T) {
	up, arrived, _ := holdingUpstream(t) // never released: the deadline cuts it
	p := startProxy(t, "-upstream", up, "-drain-delay", "0s", "-grace", "1s")
	slow := getAsync(p.URL() + "/hold")
	<-arrived
	dr := startDrainCommand(t, "-admin", p.Admin, "-wait")
	code := dr.wait(t, 30*time.Second)
	<-slow
	stderr := strings.TrimSpace(dr.stderr.String())
	if code != 1 || strings.Contains(dr.stdout.String(), "drained") {
		t.Errorf("drainproxy drain -wait after a drain that aborted a request exited %d, stdout %q, stderr %q; want 1 and no \"drained\"", code, dr.stdout.String(), stderr)
	}
	if !strings.Contains(stderr, "cut 1 request(s)") || strings.Count(stderr, "\n") != 0 {
		t.Errorf("stderr %q, want one line saying 1 request was cut", stderr)
	}
	p.WaitLog("drained; serving nothing and holding until SIGTERM (the drain was asked with hold)", 20*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 1 {
		t.Errorf("drainproxy exited %d after the held drain's SIGTERM, want 1 (aborted)", code)
	}
}
