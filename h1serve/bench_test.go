package h1serve

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// BenchmarkServe compares h1serve with net/http's Server for a trivial handler over
// loopback keep-alive connections (one per parallel client). The client is the same
// raw writer/reader for both, so differences in ns/op, cpu-ns/op (process CPU, client
// included) and allocs/op are the servers'.
func BenchmarkServe(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	for _, srv := range []struct {
		name  string
		start func(net.Listener) func()
	}{
		{"net-http", func(ln net.Listener) func() {
			s := &http.Server{Handler: handler}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
		{"h1serve", func(ln net.Listener) func() {
			s := &Server{Handler: handler}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
	} {
		b.Run(srv.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			stop := srv.start(ln)
			defer stop()
			addr := ln.Addr().String()
			req := []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n")
			b.ReportAllocs()
			var before syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				n := responseSize(b, c, req)
				buf := make([]byte, n)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			var after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
		})
	}
}

// responseSize does one exchange and returns the size of the raw response, which is
// the same for every request of the benchmark (the Date header has a fixed width).
func responseSize(b *testing.B, c net.Conn, req []byte) int {
	cr := &countingReader{r: c}
	br := bufio.NewReader(cr)
	c.Write(req)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if br.Buffered() != 0 {
		b.Fatal("more than one response")
	}
	return cr.n
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
