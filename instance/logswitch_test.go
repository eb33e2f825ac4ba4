package instance

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/accesslog"
	"github.com/drainproxy/drainproxy/drain"
)

// Access logs swapped while requests are observed: every exchange lands in exactly one
// log, and no Observe reaches a log whose worker was ended (its line would be dropped, or
// with a full one-line queue the Observe would wait for ever).
func TestLogSwitchSwapsUnderLoad(t *testing.T) {
	dir := t.TempDir()
	workers := drain.NewGroup(nil)
	s := &logSwitch{}
	open := func(i int) {
		l, err := accesslog.New(accesslog.Options{Destination: filepath.Join(dir, fmt.Sprintf("%03d.log", i)), Buffer: 1})
		if err != nil {
			t.Fatal(err)
		}
		s.swap(l, workers)
	}
	open(0)
	const goroutines, each = 4, 500
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				s.Observe(&drain.Exchange{Request: httptest.NewRequest("GET", "/x", nil), Start: time.Now(), Status: 200})
			}
		})
	}
	for i := 1; i <= 30; i++ {
		open(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Observe blocked: it reached an access log whose worker had been ended")
	}
	s.swap(nil, workers) // ends the last log's worker too
	if left := workers.Wait(10 * time.Second); len(left) > 0 {
		t.Fatalf("workers still running: %v", left)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	lines := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += bytes.Count(b, []byte("\n"))
	}
	if lines != goroutines*each || s.Dropped() != 0 {
		t.Fatalf("%d lines in %d logs, %d dropped; want %d lines, none dropped", lines, len(files), s.Dropped(), goroutines*each)
	}
}
