package main

import (
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/standin"
)

// The binary proxies to a real upstream and exits 0 on SIGTERM with nothing in flight.
func TestBinaryProxiesAndExitsOnSIGTERM(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, "-upstream", up)
	resp, err := http.Get(p.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != standin.Hello {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, standin.Hello)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	sum := p.WaitLog("drain complete", time.Second)
	if sum["aborted"] != 0.0 {
		t.Fatalf("summary %v: want aborted=0", sum)
	}
}
