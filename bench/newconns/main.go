// Command newconns opens a new connection every -every for -dur, sends one GET / on each
// and counts what each saw: served (by status), refused (ECONNREFUSED), accepted then reset
// or closed without an answer, hung (no answer within -timeout), other. -slow N also sends N
// GET /slow?d=-slowd at the start (the requests a drain must wait for). It prints every
// result that is neither served 2xx nor refused (V=1: all), then one line per kind, with
// seconds since its start. Used by scripts/dockerstop; only addresses on this machine.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

type res struct {
	kind string
	at   time.Duration
	lat  time.Duration
	info string
}

func one(addr, path string, timeout time.Duration, start time.Time) res {
	t0 := time.Now()
	at := t0.Sub(start)
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return res{"refused", at, time.Since(t0), ""}
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return res{"hung-connect", at, time.Since(t0), ""}
		}
		return res{"dial-other", at, time.Since(t0), err.Error()}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return res{"hung-after-accept", at, time.Since(t0), ""}
		case errors.Is(err, syscall.ECONNRESET):
			return res{"accepted-then-reset", at, time.Since(t0), ""}
		case errors.Is(err, io.EOF) && line == "":
			return res{"accepted-then-eof", at, time.Since(t0), ""}
		}
		return res{"read-other", at, time.Since(t0), err.Error()}
	}
	io.Copy(io.Discard, br)
	f := strings.Fields(line)
	code := "?"
	if len(f) > 1 {
		code = f[1]
	}
	return res{"served-" + code, at, time.Since(t0), ""}
}

func main() {
	addr := flag.String("addr", "", "")
	dur := flag.Duration("dur", 10*time.Second, "")
	every := flag.Duration("every", 20*time.Millisecond, "")
	slow := flag.Int("slow", 0, "slow requests at start")
	slowd := flag.String("slowd", "4s", "")
	timeout := flag.Duration("timeout", 3*time.Second, "")
	flag.Parse()
	start := time.Now()
	var mu sync.Mutex
	var all []res
	var slowRes []res
	var wg sync.WaitGroup
	for i := 0; i < *slow; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := one(*addr, "/slow?d="+*slowd, 60*time.Second, start)
			mu.Lock()
			slowRes = append(slowRes, r)
			mu.Unlock()
		}()
	}
	tk := time.NewTicker(*every)
	for time.Since(start) < *dur {
		<-tk.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := one(*addr, "/", *timeout, start)
			mu.Lock()
			all = append(all, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
	counts := map[string]int{}
	first := map[string]time.Duration{}
	last := map[string]time.Duration{}
	maxlat := map[string]time.Duration{}
	for _, r := range all {
		if counts[r.kind] == 0 {
			first[r.kind] = r.at
		}
		counts[r.kind]++
		last[r.kind] = r.at
		if r.lat > maxlat[r.kind] {
			maxlat[r.kind] = r.lat
		}
		if os.Getenv("V") != "" || (!strings.HasPrefix(r.kind, "served-2") && r.kind != "refused") {
			fmt.Printf("  %8.3fs %s lat=%v %s\n", r.at.Seconds(), r.kind, r.lat.Round(time.Microsecond), r.info)
		}
	}
	for k, n := range counts {
		fmt.Printf("new %-22s %5d  first=%.3fs last=%.3fs maxlat=%v\n", k, n, first[k].Seconds(), last[k].Seconds(), maxlat[k].Round(time.Microsecond))
	}
	for _, r := range slowRes {
		fmt.Printf("slow %s at=%.3fs lat=%v %s\n", r.kind, r.at.Seconds(), r.lat.Round(time.Millisecond), r.info)
	}
}
