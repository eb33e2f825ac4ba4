package main

// The end-to-end harness: the drainproxy binary is built once per test run (with -race when
// the tests run with -race) and started as a real process, against real upstreams on
// 127.0.0.1, and stopped with real signals.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/standin"
)

var binary string // path of the built drainproxy, set by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drainproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "drainproxy")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building drainproxy:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if conflicts := logKeyTypes.conflicts(); conflicts != "" && code == 0 {
		fmt.Fprintf(os.Stderr, "FAIL: JSON log keys with more than one type across this run's drainproxy processes (pick one representation; durations are strings like \"1.5s\"):\n%s", conflicts)
		code = 1
	}
	os.Exit(code)
}

// startUpstream serves the stand-in app on a fresh 127.0.0.1 port and returns its URL.
func startUpstream(t testing.TB) string {
	return "http://" + serveUpstream(t, standin.Handler())
}

// serveUpstream serves h on a fresh 127.0.0.1 port and returns the address.
func serveUpstream(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago (nothing listens on it),
// and that no other call in this test binary returned.
func freeAddr(t testing.TB) string {
	t.Helper()
	return testenv.FreeAddr(t)
}

// proc is a running drainproxy.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	Addr string // the public listener, host:port
	// Admin is the admin listener, host:port, when the startup line names one.
	Admin string

	mu    sync.Mutex
	lines []map[string]any // every JSON log line so far
	raw   []string         // every stderr line so far
	grew  chan struct{}    // closed and replaced whenever a line arrives

	exited   chan struct{}
	exitCode int
	exitedAt time.Time // when the process was seen to exit
}

// startProxy starts drainproxy with args plus -log-format json, and -listen 127.0.0.1:0 and
// -admin 127.0.0.1:0 unless args choose. It returns once the process logged "ready".
func startProxy(t testing.TB, args ...string) *proc {
	t.Helper()
	p := launch(t, args...)
	p.WaitLog("ready", 20*time.Second)
	return p
}

// launch starts drainproxy without waiting for it to get ready.
func launch(t testing.TB, args ...string) *proc {
	t.Helper()
	return launchWith(t, launchOptions{}, args...)
}

// launchWithStdout is launch with the process's stdout (the access log's default
// destination) going to stdout.
func launchWithStdout(t testing.TB, stdout io.Writer, args ...string) *proc {
	t.Helper()
	return launchWith(t, launchOptions{stdout: stdout}, args...)
}

type launchOptions struct {
	stdout   io.Writer // the process's stdout; nil is the test's
	ownGroup bool      // lead a process group of its own, like a job a terminal's shell starts
	noCaps   bool      // run without capabilities (setpriv), as our image runs: no SYN filter
	nofile   int       // the open-files limit to run under (prlimit); 0 leaves it
}

func launchWith(t testing.TB, o launchOptions, args ...string) *proc {
	t.Helper()
	full := []string{"-log-format", "json", "-log-level", "debug"}
	if !hasFlag(args, "-listen") && !hasFlag(args, "-config") {
		full = append(full, "-listen", "127.0.0.1:0")
	}
	if !hasFlag(args, "-admin") && !hasFlag(args, "-config") {
		full = append(full, "-admin", "127.0.0.1:0")
	}
	full = append(full, args...)
	cmd := exec.Command(binary, full...)
	if o.noCaps {
		// Root without capabilities, as in a container with all of them dropped: the
		// kernel refuses the drain's SYN filter (CAP_NET_ADMIN) and the stop goes without.
		testenv.NeedProgram(t, "setpriv", "util-linux")
		cmd = exec.Command("setpriv", append([]string{"--inh-caps=-all", "--bounding-set=-all", "--", binary}, full...)...)
	}
	if o.nofile > 0 {
		testenv.NeedProgram(t, "prlimit", "util-linux")
		lim := fmt.Sprintf("--nofile=%d:%d", o.nofile, o.nofile)
		cmd = exec.Command("prlimit", append([]string{lim, "--"}, cmd.Args...)...)
	}
	// A -race binary otherwise sleeps a second at exit, which would hide exit latency.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	if o.ownGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	return startProc(t, cmd, o.stdout)
}

// startProc starts cmd, a drainproxy (perhaps behind a program that execs it), with its
// stdout to stdout (nil: the test's) and its stderr read as the log; at cleanup it is
// killed if still running, and its log shown if the test failed.
func startProc(t testing.TB, cmd *exec.Cmd, stdout io.Writer) *proc {
	t.Helper()
	if stdout == nil {
		stdout = os.Stdout
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, grew: make(chan struct{}), exited: make(chan struct{})}
	go p.read(bufio.NewScanner(stderr))
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("drainproxy stderr:\n%s", p.Logs())
		}
	})
	return p
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == name || a == "-"+name || strings.HasPrefix(a, name+"=") || strings.HasPrefix(a, "-"+name+"=") {
			return true
		}
	}
	return false
}

func (p *proc) read(sc *bufio.Scanner) {
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			m = map[string]any{"@message": line}
		} else {
			logKeyTypes.record(m)
		}
		p.mu.Lock()
		if m["@message"] == "drainproxy starting" {
			p.Addr, _ = m["listen"].(string)
			p.Admin, _ = m["admin"].(string)
		}
		p.raw = append(p.raw, line)
		p.lines = append(p.lines, m)
		close(p.grew)
		p.grew = make(chan struct{})
		p.mu.Unlock()
	}
	err := p.cmd.Wait()
	p.exitedAt = time.Now()
	p.exitCode = p.cmd.ProcessState.ExitCode()
	if err != nil && p.exitCode < 0 {
		p.exitCode = -1
	}
	close(p.exited)
}

// WaitLog waits for a log line whose message is msg and returns its fields.
func (p *proc) WaitLog(msg string, timeout time.Duration) map[string]any {
	p.t.Helper()
	if m := p.FindLog(msg, timeout); m != nil {
		return m
	}
	p.t.Fatalf("drainproxy did not log %q within %v", msg, timeout)
	return nil
}

// FindLog is WaitLog without failing: nil when no such line came in time.
func (p *proc) FindLog(msg string, timeout time.Duration) map[string]any {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if p.lines[seen]["@message"] == msg {
				m := p.lines[seen]
				p.mu.Unlock()
				return m
			}
		}
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.exited:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if seen == n {
				return nil
			}
		case <-deadline.C:
			return nil
		}
	}
}

// Logs returns every stderr line so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// Signal sends sig to the process.
func (p *proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits for the process to exit and returns its exit code.
func (p *proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.exitCode
	case <-time.After(timeout):
		p.t.Fatalf("drainproxy still running after %v", timeout)
		return -1
	}
}

// Exited is closed when the process has exited.
func (p *proc) Exited() <-chan struct{} { return p.exited }

// URL is the public base URL.
func (p *proc) URL() string { return "http://" + p.Addr }

// runBinary runs drainproxy to completion (for usage and config errors) and returns its
// exit code and combined output.
func runBinary(t testing.TB, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("drainproxy %v did not exit: %s", args, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}
