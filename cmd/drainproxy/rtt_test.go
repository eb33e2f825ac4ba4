//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/netrig"
	"github.com/drainproxy/drainproxy/standin"
)

// The drain over real round trips (issue 14): drainproxy and its app run in one network
// namespace, raw clients in another, 50-150 ms away through internal/netrig's delaying
// link. A client never retries; "lost" is a request written on a connection the proxy had
// accepted (its connect succeeded, so its handshake reached the proxy) that got no
// complete response. Connections refused once the listeners closed are counted apart, as
// are keep-alive connections the proxy closed while idle that the client saw closed
// before it sent again (a real keep-alive client, Go's or a browser's, notices that too).

var (
	rttMatrix = flag.Bool("rtt-matrix", false, "TestRTTMatrix: run the whole matrix (links x drain delays x loads), DRAINPROXY_RTT_RUNS runs each (default 5)")
	rttIdle   = flag.Duration("rtt-idle-close", 0, "drain.idle_close for the round-trip tests (0: the default)")
	rttOnly   = flag.String("rtt-only", "", "TestRTTMatrix: run only the cases whose name contains this")
)

// rttLoad is one of the client mixes.
type rttLoad struct {
	name    string
	clients int
	path    string
	think   func() time.Duration // pause after each response; nil: none
	newConn bool                 // a new connection per request (Connection: close)
}

var rttLoads = []rttLoad{
	{name: "back-to-back", clients: 50, path: "/"},
	{name: "new-conn", clients: 20, path: "/", newConn: true},
	{name: "paced-400ms", clients: 50, path: "/", think: func() time.Duration { return 400 * time.Millisecond }},
	{name: "think-0-1s", clients: 50, path: "/", think: func() time.Duration { return rand.N(time.Second) }},
	{name: "slow-2s", clients: 10, path: "/slow?d=2s"},
}

func rttLoadNamed(name string) rttLoad {
	for _, l := range rttLoads {
		if l.name == name {
			return l
		}
	}
	panic("no load " + name)
}

type rttLink struct {
	name string
	opts netrig.Options
}

var rttLinks = []rttLink{
	{"50ms", netrig.Options{RTT: 50 * time.Millisecond}},
	{"150ms", netrig.Options{RTT: 150 * time.Millisecond}},
	{"50ms+1%loss", netrig.Options{RTT: 50 * time.Millisecond, Loss: 0.01}},
}

// rttCounts is one run's outcome, as the clients saw it.
type rttCounts struct {
	answered   atomic.Int64
	lost       atomic.Int64
	bad        atomic.Int64 // answered with a status other than 200
	refused    atomic.Int64 // connects that failed (listeners stopping or closed)
	closedIdle atomic.Int64 // keep-alive connections found closed before a request was sent
	lastResp   atomic.Int64 // unix nanoseconds of the latest complete response
	firstLost  atomic.Value // string
}

func (c *rttCounts) loss(err error) {
	c.lost.Add(1)
	c.firstLost.CompareAndSwap(nil, err.Error())
}

// rttClient is one raw HTTP/1.1 client: it sends GETs, never retries, and opens a new
// connection when the last answer said Connection: close or the server closed the idle
// connection.
func rttClient(rig *netrig.Rig, addr string, l rttLoad, stop <-chan struct{}, res *rttCounts) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-stop:
			return false
		}
	}
	if l.newConn && !pause(rand.N(500*time.Millisecond)) { // start jitter
		return
	}
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	header := "GET " + l.path + " HTTP/1.1\r\nHost: rtt.test\r\n"
	if l.newConn {
		header += "Connection: close\r\n"
	}
	req := []byte(header + "\r\n")
	for range 1_000_000 { // bounded; stop ends it long before
		select {
		case <-stop:
			return
		default:
		}
		if c == nil {
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			conn, err := rig.Dial(dctx, addr)
			dcancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				res.refused.Add(1)
				if !pause(200 * time.Millisecond) {
					return
				}
				continue
			}
			c, br = conn, bufio.NewReader(conn)
		} else if serverClosed(c, br) {
			res.closedIdle.Add(1)
			c.Close()
			c = nil
			continue
		}
		if _, err := c.Write(req); err != nil {
			res.loss(fmt.Errorf("write: %w", err))
			c.Close()
			c = nil
			continue
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			res.loss(fmt.Errorf("read response: %w", err))
			c.Close()
			c = nil
			continue
		}
		res.answered.Add(1)
		if now := time.Now().UnixNano(); now > res.lastResp.Load() {
			res.lastResp.Store(now) // a race between clients only moves it by nanoseconds
		}
		if resp.StatusCode != http.StatusOK {
			res.bad.Add(1)
		}
		if resp.Close || l.newConn {
			c.Close()
			c = nil
		}
		if l.think != nil && !pause(l.think()) {
			return
		}
	}
}

// serverClosed reports whether the peer closed c (EOF or reset already here) without
// blocking: what a keep-alive client's pool checks before it reuses a connection.
func serverClosed(c net.Conn, br *bufio.Reader) bool {
	c.SetReadDeadline(time.Now())
	_, err := br.Peek(1)
	c.SetReadDeadline(time.Time{})
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// rttRun is one drain under one load over one link.
type rttRun struct {
	exitCode   int
	answered   int64
	lost       int64
	bad        int64
	refused    int64
	closedIdle int64
	firstLost  string
	drainTook  time.Duration // signal to "drain complete"
	idleCost   time.Duration // last response written to the end of the wait: what idle windows cost
	exitAfter  time.Duration // end of the wait ("in-flight requests finished") to the process's exit
}

func rttDrain(t *testing.T, link rttLink, delay time.Duration, l rttLoad) rttRun {
	t.Helper()
	rig := netrig.New(t, link.opts)
	ln, err := rig.Listen(rig.Server, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: standin.Handler()}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })

	args := []string{"-listen", netrig.ServerIP + ":0", "-admin", "127.0.0.1:0",
		"-upstream", "http://" + ln.Addr().String(), "-grace", "30s",
		"-drain-delay", delay.String(), "-access-log", "off", "-log-level", "info"}
	if *rttIdle > 0 {
		cfg := filepath.Join(t.TempDir(), "config.hcl")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("drain {\n  idle_close = %q\n}\n", rttIdle.String())), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"-config", cfg}, args...)
	}
	var p *proc
	if err := rig.Do(rig.Server, func() error { p = launch(t, args...); return nil }); err != nil {
		t.Fatal(err)
	}
	p.WaitLog("ready", 30*time.Second)

	stop := make(chan struct{})
	var res rttCounts
	var clients sync.WaitGroup
	for range l.clients {
		clients.Go(func() { rttClient(rig, p.Addr, l, stop, &res) })
	}
	defer func() { // also on t.Fatal: no client outlives the run
		select {
		case <-stop:
		default:
			close(stop)
		}
		clients.Wait()
	}()
	// Let the load settle (every client past its first connect, the think-time clients
	// spread out), then signal at a moment unrelated to the clients' rhythm.
	time.Sleep(2*time.Second + rand.N(time.Second))
	p.Signal(syscall.SIGTERM)
	code := p.Wait(60 * time.Second)
	close(stop)
	clients.Wait()

	r := rttRun{exitCode: code, answered: res.answered.Load(), lost: res.lost.Load(), bad: res.bad.Load(),
		refused: res.refused.Load(), closedIdle: res.closedIdle.Load()}
	if s, ok := res.firstLost.Load().(string); ok {
		r.firstLost = s
	}
	sum := p.WaitLog("drain complete", time.Second)
	if testing.Verbose() && os.Getenv("DRAINPROXY_RTT_LOGS") != "" {
		t.Logf("drainproxy log:\n%s", p.Logs())
	}
	r.drainTook, _ = time.ParseDuration(fmt.Sprint(sum["took"]))
	if m := p.FindLog("in-flight requests finished", time.Second); m != nil {
		if waitEnd, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["@timestamp"])); err == nil {
			r.exitAfter = p.exitedAt.Sub(waitEnd)
			// The server wrote the last response half a round trip before the
			// client had it.
			r.idleCost = waitEnd.Sub(time.Unix(0, res.lastResp.Load()).Add(-link.opts.RTT / 2))
		}
	}
	return r
}

func (r rttRun) String() string {
	s := fmt.Sprintf("exit %d, answered %d, lost %d, non-200 %d, refused %d, closed idle %d, drain %v, idle cost %v, exit %v after the wait",
		r.exitCode, r.answered, r.lost, r.bad, r.refused, r.closedIdle,
		r.drainTook.Round(time.Millisecond), r.idleCost.Round(time.Millisecond), r.exitAfter.Round(100*time.Microsecond))
	if r.firstLost != "" {
		s += " (first lost: " + r.firstLost + ")"
	}
	return s
}

// TestRTTDrain is the part of the matrix the suite runs: 150 ms away, no delay and a short
// one, the loads that lost most before (new connections per request: handshakes in
// flight; keep-alive clients pacing or thinking: idle closes). Every run must lose nothing.
func TestRTTDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("round-trip drain runs take a minute")
	}
	link := rttLinks[1]
	for _, delay := range []time.Duration{0, time.Second} {
		for _, name := range []string{"new-conn", "paced-400ms", "think-0-1s"} {
			t.Run(fmt.Sprintf("%s/delay=%v/%s", link.name, delay, name), func(t *testing.T) {
				r := rttDrain(t, link, delay, rttLoadNamed(name))
				t.Log(r)
				if r.exitCode != 0 || r.lost != 0 || r.bad != 0 || r.answered == 0 {
					t.Fatalf("%s", r)
				}
			})
		}
	}
}

// TestRTTMatrix is issue 14's whole matrix, for the README's table (scripts/rttmatrix):
// every link, drain.delay 0 and 5 s, every load, DRAINPROXY_RTT_RUNS runs each. It only
// runs with -rtt-matrix: it takes about half an hour.
func TestRTTMatrix(t *testing.T) {
	if !*rttMatrix {
		t.Skip("the whole matrix runs with -rtt-matrix (scripts/rttmatrix)")
	}
	runs := 5
	if v, err := strconv.Atoi(os.Getenv("DRAINPROXY_RTT_RUNS")); err == nil && v > 0 {
		runs = v
	}
	var table []string
	for _, link := range rttLinks {
		for _, delay := range []time.Duration{0, 5 * time.Second} {
			for _, l := range rttLoads {
				name := fmt.Sprintf("%s/delay=%v/%s", link.name, delay, l.name)
				if *rttOnly != "" && !strings.Contains(name, *rttOnly) {
					continue
				}
				var rs []rttRun
				t.Run(name, func(t *testing.T) {
					for i := range runs {
						var r rttRun
						t.Run(strconv.Itoa(i+1), func(t *testing.T) { r = rttDrain(t, link, delay, l) })
						t.Logf("run %d: %s", i+1, r)
						rs = append(rs, r)
					}
				})
				table = append(table, rttRow(link.name, delay, l.name, rs))
			}
		}
	}
	t.Logf("\n| link | drain.delay | load | runs | answered | lost (per run) | refused | closed idle | idle cost (median) | exit after the wait (max) | drain took (median) |\n|---|---|---|---|---|---|---|---|---|---|---|\n%s", strings.Join(table, "\n"))
}

func rttRow(link string, delay time.Duration, load string, rs []rttRun) string {
	var answered, refused, closedIdle int64
	var lost []string
	var idle, exit, took []time.Duration
	for _, r := range rs {
		answered += r.answered
		refused += r.refused
		closedIdle += r.closedIdle
		lost = append(lost, strconv.FormatInt(r.lost+r.bad, 10))
		if r.exitCode != 0 {
			lost[len(lost)-1] += fmt.Sprintf(" (exit %d)", r.exitCode)
		}
		idle = append(idle, r.idleCost)
		exit = append(exit, r.exitAfter)
		took = append(took, r.drainTook)
	}
	med := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	return fmt.Sprintf("| %s | %v | %s | %d | %d | %s | %d | %d | %v | %v | %v |", link, delay, load, len(rs),
		answered, strings.Join(lost, " "), refused, closedIdle, med(idle).Round(time.Millisecond),
		slices.Max(append(exit, 0)).Round(100*time.Microsecond), med(took).Round(time.Millisecond))
}
