package main

// Issue 28: a SIGHUP in supervised mode that rebuilds the proxy (a changed timeout) and
// restarts the app. The requests in flight on the proxy the reload retired go to the old
// instance; they must finish there before it is stopped, and the reload must not make
// the new instance look unhealthy.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/sigtrap"
)

// supReloadConfig is a config file that sets the upstream's dial timeout (changing it
// makes a reload build a new proxy) and the grace.
func supReloadConfig(dialTimeout string) string {
	return fmt.Sprintf("upstream {\n  dial_timeout = %q\n}\ndrain {\n  grace = \"20s\"\n}\n", dialTimeout)
}

func TestReloadWaitsForRequestsOnTheRetiredProxy(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	path := filepath.Join(t.TempDir(), "dp.hcl")
	writeConfig(t, path, supReloadConfig("5s"))
	p := startProxy(t, supArgs([]string{"-config", path, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, port, testappBin)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)

	// /readyz is watched from before the reload to well after the old instance stopped.
	var notReady atomic.Int64
	var lastNotReady atomic.Value
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := client.Get("http://" + p.Admin + "/readyz")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				notReady.Add(1)
				lastNotReady.Store(resp.StatusCode)
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stopWatch:
		default:
			close(stopWatch)
		}
		<-watchDone
	})

	const n = 4
	slow := slowPosts(t, p.Addr, n, 3*time.Second)
	supWaitInflight(t, p, n)
	writeConfig(t, path, supReloadConfig("4s")) // a new proxy: the running one is retired
	p.Signal(syscall.SIGHUP)
	p.WaitLog("configuration reloaded", 20*time.Second)
	next := restartLogPid(t, p, "app restart: switched", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	for range n {
		if err := <-slow; err != nil {
			t.Errorf("a request in flight at SIGHUP on the proxy the reload retired: %v, want 200", err)
		}
	}
	drained := p.WaitLog("app restart: old instance drained", 30*time.Second)
	if w, _ := drained["waited_for"].(float64); w != n {
		t.Errorf("old instance drained waited_for=%v, want %d", drained["waited_for"], n)
	}
	p.WaitLog("app restart: old instance stopped", 20*time.Second)
	supGone(t, first, 5*time.Second)
	// Two more health intervals' worth of requests through the new instance.
	for range 20 {
		if pid := restartPid(t, p); pid != next {
			t.Fatalf("GET /pid = %d, want the new instance's %d", pid, next)
		}
	}
	close(stopWatch)
	<-watchDone
	if k := notReady.Load(); k != 0 {
		t.Errorf("/readyz answered %v %d times through a reload of a healthy app, want 200 throughout", lastNotReady.Load(), k)
	}
	restartStopAndCheck(t, p, next)
}

// A configuration that does not validate changes nothing in supervised mode either: the
// app is not restarted, and the error line says so. A valid one then restarts it.
func TestReloadWithABadConfigDoesNotRestartTheApp(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	path := filepath.Join(t.TempDir(), "dp.hcl")
	writeConfig(t, path, supReloadConfig("5s"))
	p := startProxy(t, supArgs([]string{"-config", path, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, port, testappBin)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)

	writeConfig(t, path, "upstream {\n  dial_timeout = \"soon\"\n}\n")
	p.Signal(syscall.SIGHUP)
	refused := p.WaitLog("the new configuration is invalid: still serving the running one (drainproxy -check shows the same)", 10*time.Second)
	if refused["app"] != "not restarted" {
		t.Errorf("the refusal line says app=%v, want \"not restarted\"", refused["app"])
	}
	if pid := restartPid(t, p); pid != first {
		t.Errorf("after a refused configuration GET /pid = %d, want the app's %d unchanged", pid, first)
	}
	if i := supLogIndex(p, "app restart: starting a new instance"); i >= 0 {
		t.Errorf("a refused configuration restarted the app")
	}

	writeConfig(t, path, supReloadConfig("4s"))
	time.Sleep(2 * sigtrap.Coalesce) // a second SIGHUP sooner would be taken for the first again
	p.Signal(syscall.SIGHUP)
	next := restartLogPid(t, p, "app restart: switched", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	p.WaitLog("app restart: old instance stopped", 20*time.Second)
	restartStopAndCheck(t, p, next)
}
