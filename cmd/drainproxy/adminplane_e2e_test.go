package main

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Issue 23 item 6: under a 256-descriptor limit, 300 clients on the admin listener (150
// long GET /drained calls, 150 connections that send nothing) cannot take the descriptors
// the public listener needs: proxied requests keep being answered at once, and /readyz is
// answered once the admin plane's held connections time out (seconds), not never. Before,
// the same load made public requests and /readyz hang with no log line.
func TestAdminPlaneCannotExhaustDescriptors(t *testing.T) {
	up := startUpstream(t)
	p := launchWith(t, launchOptions{nofile: 256}, "-upstream", up)
	p.WaitLog("ready", 20*time.Second)

	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", p.Admin, 2*time.Second)
			if err != nil {
				return // the kernel's queue is full: as good as held
			}
			if i%2 == 0 {
				fmt.Fprintf(c, "GET /drained?begin_within=10m HTTP/1.1\r\nHost: %s\r\n\r\n", p.Admin)
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		})
	}
	wg.Wait()

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 20 {
		res, err := client.Get(p.URL())
		if err != nil {
			t.Fatalf("public request %d while the admin plane is held: %v", i, err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("public request %d while the admin plane is held: %d", i, res.StatusCode)
		}
	}
	probe := &http.Client{Timeout: 20 * time.Second}
	start := time.Now()
	res, err := probe.Get("http://" + p.Admin + "/readyz")
	if err != nil {
		t.Fatalf("/readyz while the admin plane is held: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/readyz = %d, want 200", res.StatusCode)
	}
	t.Logf("/readyz answered after %s", time.Since(start).Round(time.Millisecond))
	if w := p.FindLog("out of file descriptors: cannot accept new clients, who wait in the kernel's queue; raise the limit (ulimit -n, LimitNOFILE) or lower limits.max_connections", 0); w != nil {
		t.Fatalf("drainproxy ran out of descriptors: %v", w)
	}
}
