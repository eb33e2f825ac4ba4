package supervise

// These tests start real processes (the test app in internal/testapp, built once by
// TestMain) in real process groups, and stop them with real signals. No test runs in
// parallel: one of them makes this test process a subreaper that reaps any child.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

var testApp string // path of the built test app, set by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "supervise-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testApp = filepath.Join(dir, "testapp")
	// Built before any Reaper runs: os/exec's Wait must not race a reaper.
	build := exec.Command("go", "build", "-o", testApp, "../internal/testapp")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the test app:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// output collects what the app writes and lets a test wait for a pattern.
type output struct {
	mu   sync.Mutex
	buf  strings.Builder
	grew chan struct{}
}

func newOutput2() *output { return &output{grew: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.grew)
	o.grew = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// wait waits for re to match, and returns the match's groups.
func (o *output) wait(t *testing.T, re string, timeout time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		o.mu.Lock()
		m := rx.FindStringSubmatch(o.buf.String())
		grew := o.grew
		o.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-grew:
		case <-deadline.C:
			t.Fatalf("the app's output did not match %q within %v; it is:\n%s", re, timeout, o.String())
		}
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// testSup is a supervisor of the test app with args, on a fresh port; its output is
// collected. edit adjusts the options. Cleanup closes it, which stops the app.
type testSup struct {
	*Supervisor
	out    *output
	port   string
	exited chan string // onExit's reason
}

func newTestSup(t *testing.T, r *Reaper, edit func(*Options), args ...string) *testSup {
	t.Helper()
	ts := &testSup{out: newOutput2(), port: portOf(testenv.FreeAddr(t)), exited: make(chan string, 1)}
	opts := Options{
		Command:      append([]string{testApp}, args...),
		Upstream:     &url.URL{Scheme: "http", Host: "127.0.0.1:" + ts.port},
		Stdout:       ts.out,
		Stderr:       ts.out,
		StopTimeout:  5 * time.Second,
		StartTimeout: 10 * time.Second,
		Reaper:       r,
	}
	if edit != nil {
		edit(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.Supervisor = s
	t.Cleanup(s.Close)
	if err := s.Start(func(reason string) { ts.exited <- reason }); err != nil {
		t.Fatal(err)
	}
	return ts
}

func newReaper(t *testing.T, orphans bool) *Reaper {
	t.Helper()
	r, err := NewReaper(ReaperOptions{Orphans: orphans})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func (ts *testSup) gate(t *testing.T) {
	t.Helper()
	if err := ts.Gate(context.Background()); err != nil {
		t.Fatalf("gate: %v\noutput:\n%s", err, ts.out)
	}
}

func (ts *testSup) waitExit(t *testing.T) string {
	t.Helper()
	select {
	case reason := <-ts.exited:
		return reason
	case <-time.After(20 * time.Second):
		t.Fatalf("supervision did not end by itself; output:\n%s", ts.out)
		return ""
	}
}

// guardStatus is the status and Retry-After proxy.AppGuard answers with (200 when it
// passes), from the state the Supervisor gives it.
func (ts *testSup) guardStatus() (int, string) {
	if ts.Answering() {
		return http.StatusOK, ""
	}
	return http.StatusServiceUnavailable, strconv.Itoa(ts.RetryAfter())
}

// gone reports whether no process has pid any more (reaped, not a zombie).
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// The app runs in its own process group with PORT set and {port} replaced, its output
// passes through with the prefix (the last unterminated line too), and the stop signal
// ends it cleanly.
func TestStartPassesPortPrefixesOutputAndStops(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), func(o *Options) { o.OutputPrefix = "app| " },
		"-print", `port={port}\nsecond\nunterminated`, "-eprint", `to stderr\n`)
	ts.gate(t) // it answers on the port: PORT reached it
	pid := ts.Pid()
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Fatalf("the app's process group is %d (%v), want its own (%d)", pgid, err, pid)
	}
	if pgid, _ := syscall.Getpgid(0); pgid == pid {
		t.Fatal("the test process is in the app's group")
	}
	if code, _ := ts.guardStatus(); code != 200 {
		t.Fatalf("guard answered %d while the app runs, want it to pass", code)
	}
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ts.Running() || !gone(pid) {
		t.Fatalf("the app (pid %d) is still there after Stop", pid)
	}
	out := ts.out.String()
	for _, want := range []string{"app| port=" + ts.port + "\n", "app| second\n", "app| unterminated\n", "app| to stderr\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; it is:\n%s", want, out)
		}
	}
	if code := ts.ExitCode(0); code != 0 {
		t.Fatalf("exit code %d after a stop by SIGTERM, want 0", code)
	}
}

// An app that ignores the stop signal is killed with SIGKILL after the stop timeout, and
// Stop says so.
func TestStopKillsAfterTimeout(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), func(o *Options) { o.StopTimeout = 300 * time.Millisecond }, "-ignore-term")
	ts.gate(t)
	pid := ts.Pid()
	err := ts.Stop(context.Background())
	if err == nil || !strings.Contains(err.Error(), "killed it with SIGKILL") {
		t.Fatalf("Stop = %v, want an error saying it killed the app", err)
	}
	if !gone(pid) {
		t.Fatalf("the app (pid %d) survived SIGKILL", pid)
	}
	if code := ts.ExitCode(1); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}

// A graceful app that exits 0 on the stop signal is a clean stop.
func TestStopGracefulApp(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), nil, "-stop-delay", "200ms")
	ts.gate(t)
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts.out.wait(t, "SIGTERM, stopping", time.Second)
	if code := ts.ExitCode(0); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// With restart = never an app that exits ends supervision, its code is passed on, and
// the Guard answers 503 with Retry-After.
func TestNeverPassesTheExitCodeOn(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), nil, "-exit-after", "200ms", "-exit-code", "7")
	ts.gate(t)
	if reason := ts.waitExit(t); !strings.Contains(reason, "exit code 7") {
		t.Fatalf("reason %q, want it to name exit code 7", reason)
	}
	if ts.Running() {
		t.Fatal("Running after the app exited")
	}
	if code, retry := ts.guardStatus(); code != 503 || retry == "" {
		t.Fatalf("guard answered %d with Retry-After %q, want 503 with one", code, retry)
	}
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := ts.ExitCode(0); code != 7 {
		t.Fatalf("exit code %d, want the app's 7", code)
	}
	if code := ts.ExitCode(1); code != 1 {
		t.Fatalf("exit code %d after a failed drain, want 1", code)
	}
}

// With on-failure a crashed app is restarted, and the Guard lets requests through again
// once the new one answers.
func TestOnFailureRestarts(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	ts := newTestSup(t, newReaper(t, false), func(o *Options) { o.Restart = RestartOnFailure },
		"-exit-once", marker, "-exit-after", "200ms")
	ts.gate(t)
	first := ts.Pid()
	deadline := time.Now().Add(20 * time.Second)
	for ts.Restarts() == 0 || !ts.Running() {
		if time.Now().After(deadline) {
			t.Fatalf("not restarted; output:\n%s", ts.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ts.Pid() == first {
		t.Fatal("the same pid after a restart")
	}
	for code, _ := ts.guardStatus(); code != 200; code, _ = ts.guardStatus() {
		if time.Now().After(deadline) {
			t.Fatalf("the guard still answers %d after the restart", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := ts.Restarts(); n != 1 {
		t.Fatalf("%d restarts, want 1", n)
	}
	if code := ts.ExitCode(0); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// While the app waits to be restarted the Guard answers 503 with the wait in Retry-After,
// and Stop ends the wait at once.
func TestGuardDuringBackoff(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), func(o *Options) {
		o.Restart, o.BackoffMin, o.BackoffMax = RestartAlways, time.Minute, time.Minute
	}, "-exit-after", "1s", "-exit-code", "0") // long enough for the gate to see it answer on a loaded machine
	ts.gate(t)
	ts.out.wait(t, "exiting with code 0", 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for ts.Running() {
		if time.Now().After(deadline) {
			t.Fatal("still running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		code, retry := ts.guardStatus()
		secs, _ := strconv.Atoi(retry)
		if code == 503 && secs > 1 {
			break // the backoff has been planned
		}
		if time.Now().After(deadline) {
			t.Fatalf("guard answered %d with Retry-After %q, want 503 with the backoff", code, retry)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ts.Restarts() != 0 {
		t.Fatal("restarted after Stop")
	}
}

// Restarts are limited: past max_restarts in the window supervision gives up and the exit
// code is 1.
func TestGivesUpAfterMaxRestarts(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), func(o *Options) {
		o.Restart, o.MaxRestarts, o.BackoffMin = RestartOnFailure, 2, 10*time.Millisecond
	}, "-exit-after", "50ms")
	if reason := ts.waitExit(t); !strings.Contains(reason, "gave up") {
		t.Fatalf("reason %q, want it to say it gave up", reason)
	}
	if n := ts.Restarts(); n != 2 {
		t.Fatalf("%d restarts, want 2", n)
	}
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := ts.ExitCode(0); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}

// An app that never listens fails the gate after the start timeout, with the address and
// the last check's error.
func TestStartTimeoutNamesTheAddress(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), func(o *Options) { o.StartTimeout = 300 * time.Millisecond }, "-no-listen")
	pid := ts.Pid()
	err := ts.Gate(context.Background())
	want := "did not answer on 127.0.0.1:" + ts.port + " within 300ms (start_timeout)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Gate = %v, want it to contain %q", err, want)
	}
	// And why the last check failed, so that a wrong address and a slow app read apart.
	if !strings.Contains(err.Error(), "(last check: dial tcp 127.0.0.1:"+ts.port+": connect: connection refused)") {
		t.Fatalf("Gate = %v, want the last check's error in it", err)
	}
	if err := ts.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !gone(pid) {
		t.Fatalf("the app (pid %d) is still there", pid)
	}
}

// A drain that begins during start-up ends the gate without an error of its own.
func TestGateEndsWithItsContext(t *testing.T) {
	ts := newTestSup(t, newReaper(t, false), nil, "-no-listen")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := ts.Gate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Gate = %v, want context.Canceled", err)
	}
}

// Chosen signals are forwarded to the app.
func TestForwardsSignals(t *testing.T) {
	// If forwarding were broken, SIGUSR2 would kill this test process; catch it too.
	mine := make(chan os.Signal, 1)
	signal.Notify(mine, syscall.SIGUSR2)
	defer signal.Stop(mine)
	ts := newTestSup(t, newReaper(t, false), func(o *Options) { o.ForwardSignals = []syscall.Signal{syscall.SIGUSR2} },
		"-report-signals")
	ts.gate(t)
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	ts.out.wait(t, "testapp: got SIGUSR2", 10*time.Second)
}

// As a subreaper the Reaper reaps what the app leaves behind, and still delivers the app's
// own exit status to the supervisor.
func TestReapsOrphansWithoutStealingTheAppsStatus(t *testing.T) {
	r := newReaper(t, true)
	ts := newTestSup(t, r, nil, "-orphan", "1s", "-exit-after", "1500ms", "-exit-code", "5")
	m := ts.out.wait(t, `orphan pid (\d+)`, 10*time.Second)
	orphan, _ := strconv.Atoi(m[1])
	if ppid := parentOf(orphan); ppid != os.Getpid() && !gone(orphan) {
		t.Fatalf("the orphan %d has parent %d, want this process (%d), the subreaper", orphan, ppid, os.Getpid())
	}
	deadline := time.Now().Add(10 * time.Second)
	for !gone(orphan) {
		if time.Now().After(deadline) {
			t.Fatalf("the orphan %d was not reaped: %s", orphan, procState(orphan))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.OrphansReaped() == 0 {
		t.Fatal("OrphansReaped is 0")
	}
	if reason := ts.waitExit(t); !strings.Contains(reason, "exit code 5") {
		t.Fatalf("reason %q, want the app's own exit code 5", reason)
	}
	if code := ts.ExitCode(0); code != 5 {
		t.Fatalf("exit code %d, want 5", code)
	}
}

// parentOf is pid's parent from /proc, or 0.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	m := regexp.MustCompile(`(?m)^PPid:\s+(\d+)`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func procState(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	m := regexp.MustCompile(`(?m)^State:.*$`).Find(b)
	return string(m)
}

func TestNewErrors(t *testing.T) {
	up := &url.URL{Scheme: "http", Host: "127.0.0.1:3000"}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no command", Options{Upstream: up}, "no app command"},
		{"not found", Options{Command: []string{"no-such-program-here"}, Upstream: up}, `app command "no-such-program-here"`},
		{"port placeholder without a port", Options{Command: []string{"true", "{port}"}, Upstream: &url.URL{Scheme: "http", Host: "app"}}, "uses {port} but the upstream"},
		{"bad policy", Options{Command: []string{"true"}, Upstream: up, Restart: "sometimes"}, "restart policy"},
		{"SIGTERM forwarded", Options{Command: []string{"true"}, Upstream: up, ForwardSignals: []syscall.Signal{syscall.SIGTERM}}, "forward signals"},
	}
	for _, tt := range tests {
		_, err := New(tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestAppEnv(t *testing.T) {
	got := appEnv([]string{"A=1", "PORT=9", "B=2"}, "3000")
	want := []string{"A=1", "B=2", "PORT=3000"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("appEnv = %q, want %q", got, want)
	}
	if got := appEnv([]string{"PORT=9"}, ""); len(got) != 1 || got[0] != "PORT=9" {
		t.Errorf("without a port the environment must pass unchanged, got %q", got)
	}
}

// NotServing follows the app's process: "" once it answers, a reason from the moment it
// exits until its restart answers again.
func TestNotServingFollowsTheApp(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "exited-once")
	ts := newTestSup(t, newReaper(t, false), func(o *Options) {
		o.Restart, o.BackoffMin, o.BackoffMax = RestartOnFailure, 300*time.Millisecond, 300*time.Millisecond
	}, "-exit-once", marker, "-exit-after", "1s")
	if r := ts.NotServing(); r == "" {
		t.Fatal("serving before the gate passed")
	}
	ts.gate(t)
	if r := ts.NotServing(); r != "" {
		t.Fatalf("NotServing = %q after the gate; want \"\"", r)
	}
	ts.out.wait(t, "exiting with code 3", 10*time.Second)
	waitUntil(t, func() bool { return !ts.Running() })
	if r := ts.NotServing(); !strings.Contains(r, "not running") {
		t.Fatalf("NotServing = %q while the app is down; want it to say so", r)
	}
	waitUntil(t, func() bool { return ts.NotServing() == "" })
	if ts.Restarts() != 1 || !ts.Running() {
		t.Fatalf("restarts %d running %v; want the restarted app serving", ts.Restarts(), ts.Running())
	}
}

// Something that already answers on the app's address would pass every check for the
// app: Start refuses, naming the address.
func TestStartRefusesATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s, err := New(Options{Command: []string{testApp}, Upstream: &url.URL{Scheme: "http", Host: ln.Addr().String()}, Reaper: newReaper(t, false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	err = s.Start(nil)
	if err == nil || !strings.Contains(err.Error(), "another process already answers on "+ln.Addr().String()) {
		t.Fatalf("Start = %v; want it to refuse, naming %s", err, ln.Addr())
	}
	if s.Pid() != 0 {
		t.Fatalf("the app was started (pid %d)", s.Pid())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A previous copy of the app that lets go of the port soon does not stop the start.
func TestStartWaitsForAPortBeingFreed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	released := make(chan struct{})
	go func() {
		defer close(released)
		conn, err := ln.Accept() // the first check
		if err == nil {
			conn.Close()
		}
		ln.Close()
	}()
	s, err := New(Options{Command: []string{testApp}, Upstream: &url.URL{Scheme: "http", Host: addr}, Reaper: newReaper(t, false)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Start(nil); err != nil {
		t.Fatalf("Start = %v; want it to wait for the port and start the app", err)
	}
	<-released
	if err := s.Gate(context.Background()); err != nil {
		t.Fatal(err)
	}
}
