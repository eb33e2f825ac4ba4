package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Messages of the listener when accept has no descriptor to give (listener/fdwarn.go).
const (
	fdsQueuedMsg  = "out of file descriptors: cannot accept new clients, who wait in the kernel's queue; raise the limit (ulimit -n, LimitNOFILE) or lower limits.max_connections"
	fdsRefusedMsg = "out of file descriptors: new clients are closed at once, to keep descriptors for the upstream, health checks and the admin listener; raise the limit (ulimit -n, LimitNOFILE) or lower limits.max_connections"
)

// Issue 23 item 6, the public side: under prlimit --nofile=256, 400 clients connect to the
// public listener and send nothing (each holds a descriptor until read_header_timeout,
// 10 s). The public listener leaves the top of the descriptors to the rest of the
// process: a new client gets an answer or its connection closed at once, never a wait in
// the kernel's queue; /readyz keeps answering; the shortage is logged; and once the flood
// ends, requests are served again. Before, new clients and /readyz waited with the flood
// in the accept queues until its connections timed out.
func TestPublicFloodLeavesDescriptorsInReserve(t *testing.T) {
	up := startUpstream(t)
	p := launchWith(t, launchOptions{nofile: 256}, "-upstream", up)
	p.WaitLog("ready", 20*time.Second)

	var mu sync.Mutex
	var flood []net.Conn
	endFlood := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range flood {
			c.Close()
		}
		flood = nil
	}
	t.Cleanup(endFlood)
	var wg sync.WaitGroup
	for range 400 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
			if err != nil {
				return // the kernel's queue is full: as good as held
			}
			mu.Lock()
			flood = append(flood, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	// The proxy has run out once it says so (either way).
	deadline := time.Now().Add(5 * time.Second)
	for p.FindLog(fdsRefusedMsg, 50*time.Millisecond) == nil && p.FindLog(fdsQueuedMsg, 50*time.Millisecond) == nil {
		if time.Now().After(deadline) {
			t.Fatal("400 idle clients under a 256-descriptor limit, and no line about descriptors")
		}
	}

	probe := &http.Client{Timeout: 2 * time.Second}
	if res, err := probe.Get("http://" + p.Admin + "/readyz"); err != nil {
		t.Errorf("/readyz during the flood: %v", err) // waiting in the admin listener's queue
	} else {
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("/readyz during the flood = %d, want 200 (the upstream's health checks need descriptors too)", res.StatusCode)
		}
	}

	// New clients, each on a connection of its own, with 2 s to get an answer: what did
	// each see?
	var answered, closed, reset, refused, hung int
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		switch seen := newClientSees(p.Addr); seen {
		case "answered":
			answered++
		case "closed":
			closed++
		case "reset":
			reset++
		case "refused":
			refused++
		case "hung":
			hung++
		default:
			t.Errorf("new client during the flood: %s", seen)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("20 new clients during the flood: %d answered, %d closed at once, %d reset, %d refused, %d got nothing within 2 s; slowest %s",
		answered, closed, reset, refused, hung, slowest.Round(time.Millisecond))
	if hung > 0 {
		t.Errorf("%d of 20 new clients got neither an answer nor a close within 2 s during the flood (waiting in the accept queue)", hung)
	}
	if p.FindLog(fdsRefusedMsg, 0) == nil {
		t.Errorf("no warning %q", fdsRefusedMsg)
	}

	endFlood()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline = time.Now().Add(15 * time.Second)
	for {
		res, err := client.Get(p.URL())
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served 15 s after the flood ended: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Every client closed or reset at once was refused for want of descriptors, and the
	// operator can see it (the flood's own clients past the headroom count too).
	if n := metricValue(t, p, "", `drainproxy_connections_refused_total{reason="out_of_descriptors"}`); n < float64(max(1, closed+reset)) {
		t.Errorf("drainproxy_connections_refused_total{reason=\"out_of_descriptors\"} = %v, want at least %d (the new clients closed or reset)", n, max(1, closed+reset))
	}
}

// newClientSees sends a request to addr on a connection of its own and says what came
// back within 2 s: "answered" (a status line), "closed" (EOF), "reset", "refused" (the
// connect), "hung" (nothing), or the error.
func newClientSees(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case err != nil && isTimeout(err):
		return "hung"
	case err != nil:
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: drainproxy\r\nConnection: close\r\n\r\n"); err != nil {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return "reset"
		}
		return err.Error()
	}
	head := make([]byte, 9)
	_, err = io.ReadFull(c, head)
	switch {
	case err == nil && string(head) == "HTTP/1.1 ":
		return "answered"
	case err == nil:
		return fmt.Sprintf("answered %q", head)
	case errors.Is(err, io.EOF):
		return "closed"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case isTimeout(err):
		return "hung"
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
