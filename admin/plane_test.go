package admin

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 23, item 6: the admin plane cannot be held. begin_within is cut to a few seconds,
// at most maxDrainedWaits calls of /drained wait at once, and the listener takes at most
// maxAdminConns connections, so the probes need no token and yet cannot take the
// process's descriptors.
func TestDrainedCannotHoldTheAdminPlane(t *testing.T) {
	f := newFixture(t, "secret-token")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")

	start := time.Now()
	waits := make([]<-chan answer, f.srv.drainedWaitCap())
	for i := range waits {
		waits[i] = f.getAsync("/drained?begin_within=10m")
	}
	// Once they all wait, one more is refused at once.
	deadline := time.Now().Add(10 * time.Second)
	for f.srv.drainedWaits.Load() < f.srv.drainedWaitCap() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if a := wait(t, f.getAsync("/drained?begin_within=10m")); a.code != http.StatusServiceUnavailable {
		t.Errorf("GET /drained past %d waiting: %d %q, want 503", f.srv.drainedWaitCap(), a.code, a.body)
	}
	for _, ch := range waits {
		if a := wait(t, ch); a.code != 200 || a.body != "not draining\n" {
			t.Errorf("/drained?begin_within=10m = %d %q, want 200 \"not draining\"", a.code, a.body)
		}
	}
	if took := time.Since(start); took > drainedMaxBeginWithin+5*time.Second {
		t.Errorf("begin_within=10m held the calls %s, want about %s", took, drainedMaxBeginWithin)
	}
	if f.srv.drainedWaits.Load() != 0 {
		t.Errorf("%d /drained waits counted after all answered", f.srv.drainedWaits.Load())
	}

	// The connection cap: past maxAdminConns idle connections, a new one is not served
	// until one of them closes.
	conns := make([]net.Conn, 0, f.srv.maxConns)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range f.srv.maxConns {
		c, err := net.Dial("tcp", f.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	extra, err := net.Dial("tcp", f.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	fmt.Fprintf(extra, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", f.srv.Addr())
	extra.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := extra.Read(make([]byte, 1)); n > 0 {
		t.Errorf("connection %d was served while %d were open", f.srv.maxConns+1, f.srv.maxConns)
	}
	conns[0].Close()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, _ := extra.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Errorf("once a connection closed, the waiting one got %q, want a 200", buf[:n])
	}
}

// Issue 23, item 7: admin token failures are logged (one line per interval, naming the
// client) and slowed down: concurrent guesses go one at a time, tokenFailureDelay apart.
func TestTokenFailuresLoggedAndSlowed(t *testing.T) {
	f := newFixture(t, "secret-token")
	const guesses = 10
	start := time.Now()
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", "http://"+f.srv.Addr()+"/status", nil)
			req.Header.Set("Authorization", fmt.Sprintf("Bearer guess-%d", i))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			if res.StatusCode != http.StatusUnauthorized {
				t.Errorf("a wrong token: %d, want 401", res.StatusCode)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took < guesses*tokenFailureDelay*8/10 {
		t.Errorf("%d concurrent wrong guesses answered in %s, want at least about %s (one at a time)", guesses, took, guesses*tokenFailureDelay)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "without the right token"); n != 1 {
		t.Errorf("%d log lines for %d failures, want 1 (rate-limited):\n%s", n, guesses, logs)
	}
	if !strings.Contains(logs, "client=127.0.0.1:") {
		t.Errorf("the line does not name the client:\n%s", logs)
	}
}

// The admin plane takes at most a quarter of the descriptors, so that the rest stay in
// reserve for the public listeners; /drained waits at most a quarter of its connections,
// so that probes always find room.
func TestAdminCapsFollowTheDescriptorLimit(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		conns  int
		waits  int64
	}{
		{32, 16, 4},
		{256, 64, 16},
		{1024, 128, 32},
		{1 << 20, 128, 32},
	} {
		s := &Server{maxConns: adminConnCap(tc.nofile)}
		if s.maxConns != tc.conns || s.drainedWaitCap() != tc.waits {
			t.Errorf("descriptor limit %d: %d admin connections, %d /drained waits; want %d, %d",
				tc.nofile, s.maxConns, s.drainedWaitCap(), tc.conns, tc.waits)
		}
	}
}
