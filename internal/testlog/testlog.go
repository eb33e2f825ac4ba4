// Package testlog is for tests that read what the code under test logged while its
// goroutines may still be logging.
package testlog

import (
	"bytes"
	"sync"
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
