package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

// exchange returns a finished exchange for a request carrying request id id.
func exchange(id string) *drain.Exchange {
	r := httptest.NewRequest("GET", "/path?q=1", nil)
	r.Header.Set(proxy.RequestIDHeader, id)
	r.Header.Set("User-Agent", "test/1")
	return &drain.Exchange{Request: r, Start: time.Now(), Duration: time.Millisecond, Status: 200, BytesOut: 13}
}

// start builds a Log from opts and runs its worker; the returned stop cancels the worker
// and waits for it, as the drain's flush step does. The operational log goes to the
// returned buffer.
func start(t *testing.T, opts Options) (*Log, *testlog.Buffer, func()) {
	t.Helper()
	logs := &testlog.Buffer{}
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return l, logs, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Lines observed from many goroutines all reach the file by the time the worker returns,
// and the closing line carries the totals.
func TestEveryLineIsWrittenByTheTimeRunReturns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	// A buffer smaller than the load makes requests wait for room: block must lose nothing.
	l, logs, stop := start(t, Options{Destination: path, Buffer: 16, Upstream: "http://up"})
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.Observe(exchange(fmt.Sprintf("%d-%d", g, i)))
			}
		}()
	}
	wg.Wait()
	stop()

	lines := testlog.JSONLines(t, path)
	seen := make(map[string]bool, len(lines))
	for _, m := range lines {
		id, _ := m["request_id"].(string)
		if seen[id] {
			t.Fatalf("request id %q logged twice", id)
		}
		seen[id] = true
		if m["upstream"] != "http://up" || m["path"] != "/path?q=1" {
			t.Fatalf("line %v: want upstream http://up and path /path?q=1", m)
		}
	}
	if len(lines) != goroutines*each || l.Written() != goroutines*each || l.Dropped() != 0 || l.WriteErrors() != 0 {
		t.Fatalf("%d lines in the file, written %d, dropped %d, write errors %d: want %d, %d, 0, 0",
			len(lines), l.Written(), l.Dropped(), l.WriteErrors(), goroutines*each, goroutines*each)
	}
	if !strings.Contains(logs.String(), "access log closed: destination="+path+" written=4000 dropped=0 write_errors=0") {
		t.Errorf("no closing line with the totals in:\n%s", logs)
	}
}

// gatedWriter blocks every Write until the test opens the gate.
type gatedWriter struct {
	entered chan struct{} // receives once per Write call
	gate    chan struct{} // closed to let writes through
	mu      sync.Mutex
	b       bytes.Buffer
}

func newGatedWriter() *gatedWriter {
	return &gatedWriter{entered: make(chan struct{}, 100), gate: make(chan struct{})}
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.Write(p)
}

func (g *gatedWriter) lines() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Count(g.b.String(), "\n")
}

// With "drop", a full queue costs a request nothing: the line is dropped and counted.
func TestDropPolicyDropsAndCountsWhenFull(t *testing.T) {
	w := newGatedWriter()
	l, logs, stop := start(t, Options{Destination: Stdout, Stdout: w, Buffer: 4, WhenFull: WhenFullDrop, FlushInterval: time.Millisecond})
	l.Observe(exchange("first"))
	<-w.entered // the worker is stuck writing the first line
	for i := range 100 {
		l.Observe(exchange(fmt.Sprint(i))) // 4 fit in the queue
	}
	if got := l.Dropped(); got != 96 {
		t.Fatalf("dropped %d, want 96", got)
	}
	close(w.gate)
	stop()
	if l.Written() != 5 || w.lines() != 5 {
		t.Fatalf("written %d, %d lines out: want 5", l.Written(), w.lines())
	}
	for _, want := range []string{"access log lines dropped", "dropped=96", "access log closed", "dropped=96 write_errors=0"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("operational log lacks %q:\n%s", want, logs)
		}
	}
}

// With "block", a request waits for room, but not for ever: once one has waited
// StallTimeout, lines are dropped at once until the writer moves again.
func TestBlockPolicyGivesUpOnAStuckDestination(t *testing.T) {
	w := newGatedWriter()
	l, _, stop := start(t, Options{Destination: Stdout, Stdout: w, Buffer: 2, StallTimeout: 50 * time.Millisecond, FlushInterval: time.Millisecond})
	l.Observe(exchange("written first"))
	<-w.entered
	l.Observe(exchange("queued 1"))
	l.Observe(exchange("queued 2"))
	l.Observe(exchange("waits StallTimeout, then dropped"))
	l.Observe(exchange("dropped at once"))
	if got := l.Dropped(); got != 2 {
		t.Fatalf("dropped %d, want 2", got)
	}
	close(w.gate)
	waitFor(t, "the stuck write to end", func() bool { return l.Written() >= 1 })
	l.Observe(exchange("the writer moves again: queued")) // would be dropped if still stalled
	stop()
	if l.Written() != 4 || l.Dropped() != 2 || w.lines() != 4 {
		t.Fatalf("written %d, dropped %d, %d lines out: want 4, 2, 4", l.Written(), l.Dropped(), w.lines())
	}
}

// A destination that fails (here /dev/full, a disk that is always full) is counted and
// logged once; requests never wait for it.
func TestWriteErrorsAreCountedAndLoggedOnce(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	l, logs, stop := start(t, Options{Destination: "/dev/full", Buffer: 1, FlushInterval: time.Millisecond})
	for i := range 50 {
		l.Observe(exchange(fmt.Sprint(i)))
	}
	stop()
	if l.WriteErrors() != 50 || l.Written() != 0 || l.Dropped() != 0 {
		t.Fatalf("write errors %d, written %d, dropped %d: want 50, 0, 0", l.WriteErrors(), l.Written(), l.Dropped())
	}
	out := logs.String()
	if n := strings.Count(out, "cannot write the access log"); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "no space left on device") || !strings.Contains(out, "write_errors=50") {
		t.Errorf("operational log does not say why or how many:\n%s", out)
	}
}

// failingWriter writes three quarters of its first write, then fails, then works.
type failingWriter struct {
	calls int
	b     bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	f.calls++
	if f.calls == 1 {
		n, _ := f.b.Write(p[:len(p)*3/4])
		return n, errors.New("disk on fire")
	}
	return f.b.Write(p)
}

// A write that fails halfway leaves half a line; the next line must still start on a line
// of its own, and the counts must say what was lost.
func TestHalfWrittenLineDoesNotSwallowTheNext(t *testing.T) {
	w := &failingWriter{}
	l, logs, stop := start(t, Options{Destination: Stdout, Stdout: w, FlushInterval: time.Hour})
	l.Observe(exchange("a"))
	l.Observe(exchange("b"))
	waitFor(t, "two lines queued and taken", func() bool { return len(l.queue) == 0 })
	l.Reopen() // flushes: the write that fails halfway (the reopen itself does nothing here)
	waitFor(t, "the failed write", func() bool { return l.WriteErrors() > 0 })
	l.Observe(exchange("c"))
	stop()

	lines := strings.Split(strings.TrimSuffix(w.b.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	var m map[string]any
	if err := json.Unmarshal([]byte(last), &m); err != nil || m["request_id"] != "c" {
		t.Fatalf("last line %q: want the whole line for request c (%v); output:\n%s", last, err, w.b.String())
	}
	// "a" was written whole before the cut, "b" was cut, "c" was written.
	if l.Written() != 2 || l.WriteErrors() != 1 {
		t.Errorf("written %d, write errors %d: want 2 and 1", l.Written(), l.WriteErrors())
	}
	if !strings.Contains(logs.String(), "disk on fire") || !strings.Contains(logs.String(), "access log writes work again") {
		t.Errorf("operational log does not report the failure and the recovery:\n%s", logs)
	}
}

// logrotate's create mode: the file is renamed, then Reopen starts a new one at the path.
// Nothing is lost and nothing is written twice.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
	l, logs, stop := start(t, Options{Destination: path, FlushInterval: time.Millisecond})
	for _, id := range []string{"1", "2", "3"} {
		l.Observe(exchange(id))
	}
	waitFor(t, "3 lines written", func() bool { return l.Written() == 3 })
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	l.Observe(exchange("4")) // still goes to the renamed file, which is still open
	l.Reopen()
	waitFor(t, "the new file", func() bool { _, err := os.Stat(path); return err == nil })
	l.Observe(exchange("5"))
	l.Observe(exchange("6"))
	stop()

	ids := func(p string) (s []string) {
		for _, m := range testlog.JSONLines(t, p) {
			s = append(s, m["request_id"].(string))
		}
		return s
	}
	if got := strings.Join(ids(rotated), ","); got != "1,2,3,4" {
		t.Errorf("rotated file has %s, want 1,2,3,4", got)
	}
	if got := strings.Join(ids(path), ","); got != "5,6" {
		t.Errorf("new file has %s, want 5,6", got)
	}
	if !strings.Contains(logs.String(), "access log reopened") {
		t.Errorf("no reopen line:\n%s", logs)
	}
}

// logrotate's copytruncate mode: the file is truncated under the open descriptor. The next
// line must go to the start of the file, not after a hole of zeros.
func TestWritesAfterTruncationStartAtTheBeginning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, _, stop := start(t, Options{Destination: path, FlushInterval: time.Millisecond})
	for _, id := range []string{"1", "2", "3"} {
		l.Observe(exchange(id))
	}
	waitFor(t, "3 lines written", func() bool { return l.Written() == 3 })
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	l.Observe(exchange("4"))
	stop()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(data, 0) >= 0 || !bytes.HasPrefix(data, []byte(`{"time":`)) {
		t.Fatalf("file after truncation starts %q: want the next line at offset 0", data[:min(len(data), 40)])
	}
	if lines := testlog.JSONLines(t, path); len(lines) != 1 || lines[0]["request_id"] != "4" {
		t.Fatalf("file after truncation has %v, want only line 4", lines)
	}
}

func TestNewRefusesWhatItCannotWrite(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		opts Options
		want []string
	}{
		{Options{Destination: filepath.Join(dir, "missing", "access.log")},
			[]string{filepath.Join(dir, "missing", "access.log"), "no such file or directory", "create its directory"}},
		{Options{Destination: dir}, []string{dir, "is a directory"}},
		{Options{Destination: Off}, []string{`"off"`}},
		{Options{Destination: ""}, []string{`""`, `"stdout"`}},
		{Options{Destination: Stdout, Format: "apache"}, []string{`"apache"`, `"combined"`}},
		{Options{Destination: Stdout, WhenFull: "wait"}, []string{`"wait"`, `"drop"`}},
	}
	for _, tt := range tests {
		_, err := New(tt.opts)
		if err == nil {
			t.Errorf("New(%+v) = nil error", tt.opts)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v): %q lacks %q", tt.opts, err, w)
			}
		}
	}
}

// The request path pays for a copy and a channel send, and allocates nothing.
func TestObserveDoesNotAllocate(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatCombined} {
		l, err := New(Options{Destination: Stdout, Stdout: io.Discard, Format: format, Buffer: 1000})
		if err != nil {
			t.Fatal(err)
		}
		x := exchange("id")
		if n := testing.AllocsPerRun(100, func() { l.Observe(x) }); n != 0 {
			t.Errorf("%s: Observe allocates %v times per call, want 0", format, n)
		}
	}
}

// When lines come in as fast as the worker writes them, the queue never empties. The worker
// must still come back to its select after a queue's worth, or a reopen (SIGUSR1) and the
// periodic flush would wait for the load to stop.
func TestWorkerTakesAtMostAQueuesWorthAtOnce(t *testing.T) {
	l, err := New(Options{Destination: Stdout, Stdout: io.Discard, Buffer: 8})
	if err != nil {
		t.Fatal(err)
	}
	format := l.format
	// A producer that is always faster than the writer: each line formatted brings another.
	l.format = func(b []byte, r *record) []byte { l.queue <- *r; return format(b, r) }
	l.queue <- record{}
	done := make(chan bool, 1)
	go func() { done <- l.addQueued() }()
	select {
	case emptied := <-done:
		if emptied {
			t.Fatal("addQueued says it emptied a queue that was never empty")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("addQueued did not return while lines kept coming")
	}
}
