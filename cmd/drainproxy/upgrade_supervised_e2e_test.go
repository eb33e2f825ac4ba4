package main

// Issue 28 items 3 and 4: a supervised upgrade whose new process's app is slow to start.
// The new process must not accept on the shared sockets before its own app answers (no
// "503 app not running" to anyone), and a reload of the upgraded process must not claim
// that upstream.url changed.

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// newConnClients runs n clients that each send POST / on a connection of their own,
// closed after the answer, until stop is closed. Non-200 answers are counted in bad,
// the first one kept in firstBad.
func newConnClients(addr string, n int, stop <-chan struct{}, res *loadResult, firstBad *atomic.Value) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for sent := 0; sent < 1_000_000; sent++ { // bounded; stop ends it long before
				select {
				case <-stop:
					return
				default:
				}
				rc, err := dialRaw(addr, time.Second)
				if err != nil {
					res.refused.Add(1)
					res.firstErr.CompareAndSwap(nil, err)
					continue
				}
				resp, body, err := rc.do("POST", "/")
				rc.Close()
				if err != nil {
					res.lost.Add(1)
					res.firstErr.CompareAndSwap(nil, err)
					continue
				}
				res.ok.Add(1)
				if resp.StatusCode != http.StatusOK {
					res.bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body))))
				}
			}
		})
	}
	return &wg
}

func TestSupervisedUpgradeTakesOverOnlyWhenItsAppAnswers(t *testing.T) {
	_, testappBin := supApps(t)
	u := startUpgradable(t, supArgs([]string{"-grace", "10s"}, supPort(t), testappBin, "-start-delay", "1500ms")...)
	oldPid := u.cmd.Process.Pid
	oldApp := appPid(t, u.listen)
	supKillOnCleanup(t, oldApp)

	stop := make(chan struct{})
	var res loadResult
	var firstBad atomic.Value
	clients := newConnClients(u.listen, 4, stop, &res, &firstBad)
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			clients.Wait()
		}
	}
	t.Cleanup(halt)
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > 100 })
	if err := syscall.Kill(oldPid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-u.exited:
		if code != 0 {
			t.Fatalf("the old process exited %d, want 0", code)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the old process did not exit within 60s of SIGUSR2")
	}
	newApp := appPid(t, u.listen)
	supKillOnCleanup(t, newApp)
	atExit := res.ok.Load()
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() > atExit+100 })
	halt()
	t.Logf("%d requests answered; lost %d, refused %d, not 200 %d", res.ok.Load(), res.lost.Load(), res.refused.Load(), res.bad.Load())
	if n := res.bad.Load(); n != 0 {
		t.Errorf("%d answers were not 200 across the upgrade of a healthy app (first: %v)", n, firstBad.Load())
	}
	if n := res.lost.Load() + res.refused.Load(); n != 0 {
		t.Errorf("%d requests lost or refused across the upgrade (first: %v)", n, res.firstErr.Load())
	}

	// A reload of the upgraded process: its app runs on a port of its own, which is not
	// a change of upstream.url.
	newPid := u.servingPID()
	if newPid == 0 || newPid == oldPid {
		t.Fatalf("after the upgrade /status says pid %d serves (old pid %d)", newPid, oldPid)
	}
	if err := syscall.Kill(newPid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return u.logged("app restart: starting a new instance") != nil }) // logged after the reload's own lines
	b, _ := os.ReadFile(u.logs)
	if strings.Contains(string(b), "reload cannot apply them") {
		t.Errorf("a reload of the upgraded process warned of settings it cannot apply, none changed:\n%s", grepLines(string(b), "reload cannot apply"))
	}
	if err := syscall.Kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(newPid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("the new process on SIGTERM: exit %d, %v; want 0", ws.ExitStatus(), err)
	}
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}
