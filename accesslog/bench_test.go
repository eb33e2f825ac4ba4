package accesslog

import (
	"context"
	"io"
	"path/filepath"
	"testing"
)

// What one line costs. Run with:
//
//	go test -run '^$' -bench . -benchmem ./accesslog/
//
// BenchmarkObserve is the request path's share (copy and queue) with the worker running
// behind it; BenchmarkFormat is the worker's formatting alone; BenchmarkLine is a whole
// line, queued by parallel requests and written to a file by the worker.

func BenchmarkObserve(b *testing.B) {
	for _, policy := range []string{WhenFullBlock, WhenFullDrop} {
		b.Run(policy, func(b *testing.B) {
			l, err := New(Options{Destination: Stdout, Stdout: io.Discard, WhenFull: policy})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); l.Run(ctx) }()
			x := exchange("0123456789abcdef0123456789abcdef")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Observe(x)
				}
			})
			b.StopTimer()
			cancel()
			<-done
			b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
		})
	}
}

func BenchmarkFormat(b *testing.B) {
	for _, f := range []struct {
		name   string
		format appendFunc
	}{
		{FormatJSON, jsonAppender("http://127.0.0.1:3000")},
		{FormatCommon, appendCommon},
		{FormatCombined, appendCombined},
	} {
		b.Run(f.name, func(b *testing.B) {
			r := sampleRecord()
			buf := make([]byte, 0, bufSize)
			b.ReportAllocs()
			for b.Loop() {
				buf = f.format(buf[:0], &r)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkLine(b *testing.B) {
	l, err := New(Options{Destination: filepath.Join(b.TempDir(), "access.log")})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	x := exchange("0123456789abcdef0123456789abcdef")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Observe(x)
		}
	})
	cancel() // the timer keeps running: writing out and fsyncing is part of the cost
	<-done
	if l.Written() != uint64(b.N) {
		b.Fatalf("written %d of %d", l.Written(), b.N)
	}
}
