package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Issue 25, item 6, through the binary: a router watches /readyz and, once it says 503,
// goes on opening new connections for a random propagation lag (1-3 s), as an endpoints
// controller and kube-proxy do. With drain.delay = "auto" nothing is lost, and the delay
// ends within quiet + 100 ms of the router's last new connection.
func TestAutoDelayWaitsForTheRouter(t *testing.T) {
	const quiet = time.Second
	config := filepath.Join(t.TempDir(), "config.hcl")
	os.WriteFile(config, []byte(fmt.Sprintf(`
upstream {
  url = "%s"
}
drain {
  delay = "auto"
  quiet = "%s"
  delay_max = "20s"
}
`, startUpstream(t), quiet)), 0o644)
	p := startProxy(t, "-config", config, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-access-log", "off")
	p.Signal(syscall.SIGTERM)
	for { // the router notices the 503
		resp, err := http.Get("http://" + p.Admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	lag := time.Second + rand.N(2*time.Second)
	noticed := time.Now()
	var lost, served atomic.Int64
	var wg sync.WaitGroup
	var lastNew time.Time
	for time.Since(noticed) < lag {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // a new connection each
		lastNew = time.Now()
		wg.Go(func() {
			resp, err := client.Get(p.URL() + "/")
			if err != nil {
				lost.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				lost.Add(1)
				return
			}
			served.Add(1)
		})
		time.Sleep(rand.N(quiet / 4))
	}
	wg.Wait()
	over := p.WaitLog("drain delay over", 30*time.Second)
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if lost.Load() != 0 {
		t.Errorf("%d requests lost of %d (lag %v)", lost.Load(), lost.Load()+served.Load(), lag)
	}
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(over["@timestamp"]))
	if err != nil {
		t.Fatalf("delay line %v: %v", over, err)
	}
	if gap := at.Sub(lastNew); gap < quiet-100*time.Millisecond || gap > quiet+100*time.Millisecond {
		t.Errorf("the delay ended %v after the router's last new connection (lag %v); want %v + at most 100ms: %v", gap, lag, quiet, over)
	}
	if over["why"] != "no new connection for drain.quiet" {
		t.Errorf("delay line %v", over)
	}
}
