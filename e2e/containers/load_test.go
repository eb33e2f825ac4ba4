package containers

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// load is a client that never retries: each worker writes requests by hand on its own
// keep-alive connection (Go's Transport would silently resend an idempotent request that
// failed on a reused connection, hiding exactly what these tests count). A worker opens
// a new connection when the server asked it to close, or after a failure, as long as
// allowNew says that the load balancer still sends it here.
type load struct {
	addr     string
	allowNew func() bool
	stop     chan struct{}
	wg       sync.WaitGroup

	ok           atomic.Int64 // 200 answers
	failedReused atomic.Int64 // requests lost on an established (reused) connection
	failedFresh  atomic.Int64 // first requests on a new connection that failed
	dialFailed   atomic.Int64 // new connections that could not be opened

	mu     sync.Mutex
	errors map[string]int // a sample of what failed, for the test log
}

const (
	maxPerWorker = 200_000              // bound on the count, besides the time bound
	maxLoadTime  = 3 * time.Minute      // bound on the time, whatever the test does
	pace         = 2 * time.Millisecond // between requests: the machine is shared
)

func startLoad(addr string, workers int, allowNew func() bool) *load {
	l := &load{addr: addr, allowNew: allowNew, stop: make(chan struct{}), errors: map[string]int{}}
	deadline := time.Now().Add(maxLoadTime)
	for range workers {
		l.wg.Go(func() { l.worker(deadline) })
	}
	return l
}

// finish stops the workers and waits for them.
func (l *load) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) failed() int64 {
	return l.failedReused.Load() + l.failedFresh.Load() + l.dialFailed.Load()
}

func (l *load) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("ok=%d failed_on_established=%d failed_on_new=%d dial_failed=%d errors=%v",
		l.ok.Load(), l.failedReused.Load(), l.failedFresh.Load(), l.dialFailed.Load(), l.errors)
}

func (l *load) note(kind string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg := err.Error() // without the addresses, so that alike errors count together
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	key := kind + ": " + msg
	if _, seen := l.errors[key]; seen || len(l.errors) < 8 {
		l.errors[key]++
	}
}

func (l *load) worker(deadline time.Time) {
	var (
		conn   net.Conn
		br     *bufio.Reader
		reused bool
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for range maxPerWorker {
		select {
		case <-l.stop:
			return
		default:
		}
		if time.Now().After(deadline) {
			return
		}
		if conn == nil {
			if !l.allowNew() {
				return
			}
			c, err := net.DialTimeout("tcp", l.addr, 2*time.Second)
			if err != nil {
				l.dialFailed.Add(1)
				l.note("dial", err)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			conn, br, reused = c, bufio.NewReader(c), false
		}
		closeAfter, err := roundTrip(conn, br, "/")
		switch {
		case err != nil && reused:
			l.failedReused.Add(1)
			l.note("established", err)
		case err != nil:
			l.failedFresh.Add(1)
			l.note("new", err)
		default:
			l.ok.Add(1)
		}
		if err != nil || closeAfter {
			conn.Close()
			conn = nil
		} else {
			reused = true
		}
		time.Sleep(pace)
	}
}

// roundTrip sends one GET and reads the whole answer; anything but 200 is an error.
func roundTrip(conn net.Conn, br *bufio.Reader, path string) (closeAfter bool, err error) {
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: drainproxy.test\r\n\r\n"); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return true, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return true, err
	}
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("status %s", resp.Status)
	}
	return resp.Close, nil
}

// slowRequests sends n GET /slow?d=... on new connections at once; the channel delivers
// each outcome (nil: 200 with the whole body).
func slowRequests(addr string, n int, d time.Duration) <-chan error {
	ch := make(chan error, n)
	for range n {
		go func() {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				ch <- err
				return
			}
			defer c.Close()
			_, err = roundTrip(c, bufio.NewReader(c), "/slow?d="+d.String())
			ch <- err
		}()
	}
	return ch
}

func collect(ch <-chan error, n int) (failed []error) {
	for range n {
		if err := <-ch; err != nil {
			failed = append(failed, err)
		}
	}
	return failed
}
