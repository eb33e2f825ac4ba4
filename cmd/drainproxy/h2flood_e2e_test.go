package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The zero-window HTTP/2 flood of issue 23, scaled down: each attacking connection sets
// SETTINGS_INITIAL_WINDOW_SIZE=0, never sends a WINDOW_UPDATE, and keeps 250 streams
// asking for a 64 KiB response open (a new one for each that is reset; one answered to its
// end is not asked again), so that every stream would hold an upstream request until
// send_timeout. With 20 such connections against upstream.max_requests = 256 (the issue's
// 80 against the default 1,024, scaled: 2,000 streams at 100 per connection), canary
// clients on HTTP/1.1 and h2c must still be answered 200 within 1 s each, the proxy must
// not open more upstream requests than the cap, must end the streams it refuses, and its
// memory stays bounded.
func TestHTTP2ZeroWindowFloodLeavesOthersServed(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of 20 connections for several seconds")
	}
	// DRAINPROXY_FLOOD_CONNS runs the full attack (80) by hand; CI runs 20.
	attackers := 20
	if n, err := strconv.Atoi(os.Getenv("DRAINPROXY_FLOOD_CONNS")); err == nil && n > 0 {
		attackers = n
	}
	const (
		streamsPer = 250
		bodySize   = 64 << 10
		attackFor  = 8 * time.Second
	)
	body := bytes.Repeat([]byte("x"), bodySize)
	var upInflight, upMax atomic.Int64
	// The proxy's upstream connections open at once: each request in flight holds one.
	var upConns, upConnsMax atomic.Int64
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upSrv := &http.Server{ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n := upConns.Add(1)
			for m := upConnsMax.Load(); n > m && !upConnsMax.CompareAndSwap(m, n); m = upConnsMax.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			upConns.Add(-1)
		}
	}}
	up := upLn.Addr().String()
	upSrv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := upInflight.Add(1)
		defer upInflight.Add(-1)
		for {
			m := upMax.Load()
			if n <= m || upMax.CompareAndSwap(m, n) {
				break
			}
		}
		if r.URL.Path == "/canary" {
			io.WriteString(w, "ok")
			return
		}
		w.Write(body)
	})
	go upSrv.Serve(upLn)
	t.Cleanup(func() { upSrv.Close() })
	// The cap scales with the attack: the 80 connections against the default 1,024.
	maxRequests := 1024 * attackers / 80
	cfg := filepath.Join(t.TempDir(), "drainproxy.hcl")
	writeConfig(t, cfg, fmt.Sprintf("upstream {\n  max_requests = %d\n}\n", maxRequests))
	p := startProxy(t, "-config", cfg, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-upstream", "http://"+up)
	floodHeld.Store(0)

	ctx, cancel := context.WithTimeout(context.Background(), attackFor)
	defer cancel()
	var attack sync.WaitGroup
	var opened atomic.Int64
	for range attackers {
		attack.Add(1)
		go func() {
			defer attack.Done()
			opened.Add(int64(zeroWindowFlood(ctx, p.Addr, streamsPer)))
		}()
	}
	var peakRSS atomic.Int64
	go func() {
		for ctx.Err() == nil {
			if rss := rssOf(p.cmd.Process.Pid); rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	// Let the flood fill the cap, then ask as canaries: one HTTP/1.1 client, one h2c.
	time.Sleep(3 * time.Second)
	h1 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var h2cOnly http.Protocols
	h2cOnly.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &h2cOnly}}
	var worst time.Duration
	var lat []string
	var failures []string
	for i := 0; ctx.Err() == nil && i < 12; i++ {
		for name, c := range map[string]*http.Client{"HTTP/1.1": h1, "h2c": h2c} {
			start := time.Now()
			res, err := c.Get("http://" + p.Addr + "/canary")
			took := time.Since(start)
			if err != nil {
				failures = append(failures, name+": "+err.Error())
				continue
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				failures = append(failures, name+": "+res.Status)
			}
			worst = max(worst, took)
			lat = append(lat, name+" "+took.Round(time.Millisecond).String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	held := floodHeld.Load()
	cancel()
	attack.Wait()

	t.Logf("attack opened %d streams, %d still open at its end; upstream saw at most %d connections and %d requests at once; slowest canary %s; peak RSS %d MB",
		opened.Load(), held, upConnsMax.Load(), upMax.Load(), worst, peakRSS.Load()>>20)
	if len(failures) > 0 {
		t.Errorf("%d canary requests failed during the flood, first: %s", len(failures), failures[0])
	}
	t.Logf("canaries: %s", strings.Join(lat, ", "))
	t.Logf("streams answered without a body (refused under overload): %d", answered.Load())
	for i := range rstCodes {
		if n := rstCodes[i].Load(); n > 0 {
			t.Logf("RST_STREAM %s: %d", http2.ErrCode(i), n)
		}
	}
	// The race detector slows the proxy several times, and a full -race run of this package
	// on a loaded 2-core machine starved it for seconds (3.8 s once); the bound that matters
	// is the real build's. Under -race the connection count below still fails without the
	// cap (5,002 at once before it).
	if bound := map[bool]time.Duration{false: time.Second, true: 5 * time.Second}[raceEnabled]; worst > bound {
		t.Errorf("slowest canary took %s during the flood, want within %s", worst, bound)
	}
	// Each request in flight holds an upstream connection; a few more may be idle in the
	// pool after a stream was cut, on their way to the next request.
	if got := upConnsMax.Load(); got > int64(maxRequests+64) {
		t.Errorf("the proxy held %d upstream connections at once, want about upstream.max_requests (%d) at most", got, maxRequests)
	}
	// The proxy may hold a stream while it is in flight to the upstream (max_requests) or
	// waits for a slot (as many again, for queue_timeout); one it refused must end, though
	// its client gives no send window. Before, each refused stream stayed open with its
	// request and goroutine for as long as its connection: all 100 of every connection.
	if held > int64(2*maxRequests) {
		t.Errorf("%d of the attack's streams still open at its end, want at most %d (in flight and queued under max_requests = %d)", held, 2*maxRequests, maxRequests)
	}
	// 200 MB for the 80 connections, in proportion for fewer over the process's
	// own ~15 MB: 61 MB at 20 (measured 2026-12-07: 69-70 MB before, 54-55 MB after). The
	// race detector multiplies memory several times; the bound is for the real build.
	if limit := int64(15<<20 + (185<<20)*attackers/80); !raceEnabled && peakRSS.Load() > limit {
		t.Errorf("peak RSS %d MB during the flood, want under %d MB", peakRSS.Load()>>20, limit>>20)
	}
}

// zeroWindowFlood runs one attacking connection until ctx ends and returns how many
// streams it opened.
func zeroWindowFlood(ctx context.Context, addr string, streams int) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	var wmu sync.Mutex
	fr := http2.NewFramer(c, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hbuf bytes.Buffer
	henc := hpack.NewEncoder(&hbuf)
	io.WriteString(c, http2.ClientPreface)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	next := uint32(1)
	open := func() {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", addr}, {":path", "/big"}} {
			henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: next, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
		next += 2
		floodHeld.Add(1)
	}
	wmu.Lock()
	for range streams {
		open()
	}
	wmu.Unlock()
	opened := streams
	for ctx.Err() == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			return opened
		}
		wmu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			// An answer without a body (a refusal under overload) ends the stream in its
			// HEADERS frame, which needs no window. Not asked again: that would be a
			// request flood as fast as the proxy answers, which no memory bound is about.
			if f.StreamEnded() {
				answered.Add(1)
				floodHeld.Add(-1)
			}
		case *http2.RSTStreamFrame:
			rstCodes[f.ErrCode].Add(1)
			floodHeld.Add(-1)
			// A stream cut by a timeout or to make room is asked for again; one over the
			// stream limit (refused, protocol error) is not: that would be a busy loop.
			if f.ErrCode == http2.ErrCodeInternal || f.ErrCode == http2.ErrCodeCancel {
				open() // keep the pressure: a new stream for each that ends
				opened++
			}
		case *http2.GoAwayFrame:
			wmu.Unlock()
			return opened
		}
		wmu.Unlock()
	}
	return opened
}

var rstCodes [16]atomic.Int64

// answered counts the attackers' streams that ended with a response in one HEADERS frame;
// floodHeld is how many of their streams are open (asked for, neither answered to the end
// nor reset).
var answered, floodHeld atomic.Int64

// rssOf is the resident set size of process pid, in bytes (0 when unknown).
func rssOf(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
