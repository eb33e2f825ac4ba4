// Command openloop sends GET requests at a constant rate over a fixed set of keep-alive
// connections on loopback and reports latency percentiles, counted from the moment each
// request was due, not from when it could be sent: a server that falls behind shows its
// queueing as latency (no coordinated omission, as in wrk2), instead of as a lower rate.
//
//	openloop -url http://127.0.0.1:8080/ -rate 5000 -d 10s [-c 64] [-warmup 2s]
//
// Request i is due at start + i/rate and goes out on connection i mod c as soon as that
// connection has its previous answer. It is a small HTTP/1.1 client (Content-Length
// answers only) so that at 10,000 req/s it costs the shared cores far less than a
// net/http client would. It prints one line:
//
//	sent N ok N errors N seconds S p50_ms X p99_ms X p999_ms X max_ms X
//
// Only loopback addresses are accepted.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	target := flag.String("url", "http://127.0.0.1:8080/", "http://loopback:port/path")
	rate := flag.Int("rate", 1000, "requests per second")
	d := flag.Duration("d", 10*time.Second, "measured duration (at most 5m)")
	warmup := flag.Duration("warmup", 0, "duration at the same rate before the measured one, not counted")
	conns := flag.Int("c", 64, "keep-alive connections")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" {
		fail("-url must be an http:// URL, not %q", *target)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() || u.Port() == "" {
		fail("-url must name a loopback IP and a port, not %q", *target)
	}
	if *rate < 1 || *conns < 1 || *d <= 0 || *d > 5*time.Minute || *warmup < 0 || *warmup > time.Minute {
		fail("-rate and -c must be at least 1, -d between 0 and 5m, -warmup at most 1m")
	}
	path := u.RequestURI()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: openloop\r\n\r\n")

	total := int(float64(*rate) * (*warmup + *d).Seconds())
	skip := int(float64(*rate) * warmup.Seconds()) // the warm-up's requests are not counted
	interval := time.Second / time.Duration(*rate)
	start := time.Now().Add(50 * time.Millisecond)
	lat := make([]time.Duration, total) // by request index; -1 for a failed request
	var wg sync.WaitGroup
	for c := range *conns {
		wg.Go(func() { sendEvery(u.Host, req, lat, c, *conns, start, interval) })
	}
	wg.Wait()
	measured := lat[skip:]
	ok := make([]time.Duration, 0, len(measured))
	for _, l := range measured {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	slices.Sort(ok)
	pct := func(p float64) float64 {
		if len(ok) == 0 {
			return 0
		}
		i := min(int(float64(len(ok))*p+0.999999)-1, len(ok)-1)
		return float64(ok[max(i, 0)]) / 1e6
	}
	fmt.Printf("sent %d ok %d errors %d seconds %.3f p50_ms %.3f p99_ms %.3f p999_ms %.3f max_ms %.3f\n",
		len(measured), len(ok), len(measured)-len(ok), d.Seconds(), pct(0.50), pct(0.99), pct(0.999), pct(1))
}

// sendEvery sends requests c, c+step, c+2*step, ... of lat on one keep-alive connection
// (a new one after an error or a close), each at its due time, and records its latency
// from that time, or -1 for a failed one.
func sendEvery(host string, req []byte, lat []time.Duration, c, step int, start time.Time, interval time.Duration) {
	var cl *client
	defer func() {
		if cl != nil {
			cl.close()
		}
	}()
	for i := c; i < len(lat); i += step {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		if cl == nil {
			var err error
			if cl, err = dial(host); err != nil {
				lat[i] = -1
				continue
			}
		}
		keep, err := cl.do(req)
		lat[i] = time.Since(due)
		if err != nil {
			lat[i] = -1
		}
		if err != nil || !keep {
			cl.close()
			cl = nil
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "openloop: "+format+"\n", args...)
	os.Exit(2)
}

type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(addr string) (*client, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &client{conn: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (c *client) close() { c.conn.Close() }

var errAnswer = errors.New("not a 200 answer with a Content-Length")

// do sends req and reads a 200 answer with a Content-Length body; keep is false when the
// server said it closes the connection.
func (c *client) do(req []byte) (keep bool, err error) {
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(req); err != nil {
		return false, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(string(line), "HTTP/1.1 200 ") {
		return false, errAnswer
	}
	length, keep := -1, true
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(h) <= 2 {
			break
		}
		name, value, _ := strings.Cut(string(h), ":")
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(value); err != nil {
				return false, errAnswer
			}
		case strings.EqualFold(name, "Connection") && strings.EqualFold(value, "close"):
			keep = false
		}
	}
	if length < 0 {
		return false, errAnswer
	}
	if _, err := c.r.Discard(length); err != nil {
		return false, err
	}
	return keep, nil
}
