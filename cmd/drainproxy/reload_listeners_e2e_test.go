package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenersConfig is a config file with a plain listener on each of addrs, in front of
// upstream (a URL).
func listenersConfig(upstream string, addrs ...string) string {
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, "listener {\n  address = %q\n}\n", a)
	}
	fmt.Fprintf(&b, "admin {\n  address = \"127.0.0.1:0\"\n}\nupstream {\n  url = %q\n}\n", upstream)
	return b.String()
}

// Issue 16.1 and 16.4: under never-retrying keep-alive load on two listeners, with slow
// requests in flight on one, SIGHUP removes that one and adds a third. Every request
// either listener accepted is answered 200 (the removed one drains as at shutdown: its
// slow requests complete, its clients get Connection: close), the removed port refuses
// connections afterwards instead of queueing them on the upgrader's copy of the socket,
// the new port serves, and the kept one never fails.
func TestReloadAddsAndRemovesListenersUnderLoad(t *testing.T) {
	upstream, arrived := drainUpstream(t)
	keep, drop, add := freeAddr(t), freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	writeConfig(t, cfgPath, listenersConfig(upstream, keep, drop))
	p := startProxy(t, "-config", cfgPath)

	stop := make(chan struct{})
	var onKeep, onDrop loadResult
	keepClients := keepAliveClients(keep, 10, "/", stop, &onKeep)
	dropClients := keepAliveClients(drop, 10, "/", stop, &onDrop)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			close(stop)
			keepClients.Wait()
			dropClients.Wait()
		}
	})
	slow := slowPosts(t, drop, 5, 2*time.Second)
	awaitArrivals(t, arrived, 5)
	waitFor(t, 10*time.Second, func() bool { return onDrop.ok.Load() > 200 && onKeep.ok.Load() > 200 })

	writeConfig(t, cfgPath, listenersConfig(upstream, keep, add))
	p.Signal(syscall.SIGHUP)
	m := p.WaitLog("configuration reloaded", 10*time.Second)
	changed, _ := m["changed"].(string)
	if !strings.Contains(changed, "listener added: "+add) || !strings.Contains(changed, "listener removed: "+drop) {
		t.Fatalf("the reload line says changed=%q, want the added and the removed listener in it", changed)
	}
	if resp, _, err := mustDial(t, add).do("POST", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the added listener %s: %v %v", add, resp, err)
	}
	for i := range 5 {
		if err := <-slow; err != nil {
			t.Fatalf("slow request %d on the removed listener: %v", i, err)
		}
	}
	p.WaitLog("listener removed", 15*time.Second)
	dropClients.Wait() // each was refused once its connection closed
	if c, err := net.DialTimeout("tcp", drop, time.Second); err == nil {
		c.Close()
		t.Fatalf("the removed listener %s still accepts connections", drop)
	} else if !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("a connect to the removed listener %s: %v, want connection refused", drop, err)
	}
	keepBefore := onKeep.ok.Load()
	waitFor(t, 10*time.Second, func() bool { return onKeep.ok.Load() > keepBefore+200 })

	close(stop)
	keepClients.Wait()
	stopped = true
	for name, r := range map[string]*loadResult{"kept " + keep: &onKeep, "removed " + drop: &onDrop} {
		if r.lost.Load() != 0 || r.bad.Load() != 0 {
			t.Errorf("%s listener: %d lost, %d not 200 (first: %v)", name, r.lost.Load(), r.bad.Load(), r.firstErr.Load())
		}
		t.Logf("%s listener: %d answered, %d lost, %d refused", name, r.ok.Load(), r.lost.Load(), r.refused.Load())
	}
	if onKeep.refused.Load() != 0 {
		t.Errorf("the kept listener refused %d connections", onKeep.refused.Load())
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, p.Logs())
	}
}

// mustDial is a raw connection to addr.
func mustDial(t *testing.T, addr string) *rawConn {
	t.Helper()
	rc, err := dialRaw(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// Issue 16.1: a reload that adds a listener on a port in use changes nothing: the error
// names the address, every listener of the running configuration keeps serving (the one
// it would have removed too), and a later reload without the clash applies.
func TestReloadAddingABusyPortKeepsServing(t *testing.T) {
	upstream, _ := drainUpstream(t)
	a, b := freeAddr(t), freeAddr(t)
	busy, err := net.Listen("tcp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	writeConfig(t, cfgPath, listenersConfig(upstream, a, b))
	p := startProxy(t, "-config", cfgPath)

	writeConfig(t, cfgPath, listenersConfig(upstream, a, busy.Addr().String()))
	p.Signal(syscall.SIGHUP)
	m := p.WaitLog("cannot open a new listener: still serving the running configuration", 10*time.Second)
	if e, _ := m["error"].(string); !strings.Contains(e, busy.Addr().String()) {
		t.Fatalf("the error %q does not name the busy address %s", e, busy.Addr())
	}
	for _, addr := range []string{a, b} {
		if resp, _, err := mustDial(t, addr).do("POST", "/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("listener %s after the failed reload: %v %v", addr, resp, err)
		}
	}
	if p.FindLog("listener removed", 500*time.Millisecond) != nil {
		t.Fatal("the failed reload removed a listener")
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// Issue 16.1 with 16.2: a listener that a reload removed (its socket stopped, though the
// upgrader still holds a copy) and that the config file then brings back is served by the
// process a SIGUSR2 upgrade starts: it binds the address afresh instead of using the dead
// socket it inherited. A listener the reload added is handed over like the others.
func TestUpgradeAfterReloadChangedTheListeners(t *testing.T) {
	up := startCountingUpstream(t)
	upstream := "http://" + up.addr
	a, b, c := freeAddr(t), freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	writeConfig(t, cfgPath, listenersConfig(upstream, a, b))
	u := startUpgradableListening(t, nil, false, "-config", cfgPath)
	oldPid := u.cmd.Process.Pid

	writeConfig(t, cfgPath, listenersConfig(upstream, a, c)) // b removed, c added
	if err := syscall.Kill(oldPid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, func() bool { return u.logged("listener removed") != nil })
	if _, err := net.DialTimeout("tcp", b, time.Second); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("the removed listener %s: connect %v, want connection refused", b, err)
	}

	writeConfig(t, cfgPath, listenersConfig(upstream, a, b, c)) // b back
	if err := syscall.Kill(oldPid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { pid := u.servingPID(); return pid != 0 && pid != oldPid })
	if code := <-u.exited; code != 0 {
		t.Fatalf("the old process exited %d, want 0", code)
	}
	for _, addr := range []string{a, b, c} {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("after the upgrade, listener %s: %v %v", addr, resp, err)
		}
		resp.Body.Close()
	}
	newPid := u.servingPID()
	syscall.Kill(newPid, syscall.SIGTERM)
	exited := make(chan syscall.WaitStatus, 1)
	go func() { // the test is the subreaper of the new process
		var ws syscall.WaitStatus
		syscall.Wait4(newPid, &ws, 0, nil)
		exited <- ws
	}()
	select {
	case ws := <-exited:
		if ws.ExitStatus() != 0 {
			t.Fatalf("the new process exited %d, want 0", ws.ExitStatus())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the new process did not exit within 15 s of SIGTERM")
	}
}
