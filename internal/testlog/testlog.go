// Package testlog is for tests that read what the code under test logged, while its
// goroutines may still be logging, or what it wrote to a JSON-lines log file.
package testlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// Buffer is an io.Writer for a logger, safe to write and read from several goroutines.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// JSONLines reads the file at path as one JSON object per line (a JSON access log) and
// fails the test on a line that is not one.
func JSONLines(tb testing.TB, path string) []map[string]any {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			tb.Fatalf("%s line %d is not JSON: %q: %v", path, len(lines)+1, sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}
