package admin

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

type answer struct {
	code int
	body string
	err  error
}

// getAsync sends GET path to the admin listener and delivers the answer on the channel.
func (f *fixture) getAsync(path string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + f.srv.Addr() + path)
		if err != nil {
			ch <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- answer{code: resp.StatusCode, body: string(b)}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatal(a.err)
		}
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("GET /drained did not answer within 30s")
	}
	return answer{}
}

// With no drain, /drained answers 200 once begin_within has passed: a liveness restart of
// the app alone is not held up.
func TestDrainedNoDrain(t *testing.T) {
	f := newFixture(t, "secret-token")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")
	if a := wait(t, f.getAsync("/drained?begin_within=0s")); a.code != 200 || a.body != "not draining\n" {
		t.Fatalf("/drained with no drain = %d %q, want 200 \"not draining\"", a.code, a.body)
	}
}

// The hook arrives first and drainproxy's SIGTERM a moment later, as kubelet sends them
// in parallel: /drained must wait for that drain to finish waiting, not answer "not
// draining". Then, during a drain (delay of an hour here), it holds until the drain has
// waited, or answers 503 at its own timeout.
func TestDrainedWaitsForTheDrain(t *testing.T) {
	f := newFixture(t, "secret-token") // no token needed: it is a hook
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")

	early := f.getAsync("/drained?begin_within=20s")
	// A second request's round trip lets the first one reach the server before the drain
	// begins (not observable from here, but it sent first on a fresh connection).
	if a := wait(t, f.getAsync("/drained?begin_within=0s")); a.code != 200 {
		t.Fatalf("short /drained = %d %q", a.code, a.body)
	}
	f.d.Drain("test")
	f.waitReadyz(503, "draining")

	if a := wait(t, f.getAsync("/drained?timeout=100ms")); a.code != 503 || !strings.HasPrefix(a.body, "still draining") {
		t.Fatalf("/drained during the drain delay with timeout=100ms = %d %q, want 503 still draining", a.code, a.body)
	}
	select {
	case a := <-early:
		t.Fatalf("/drained answered %d %q before the drain had waited", a.code, a.body)
	default:
	}
	during := f.getAsync("/drained")
	f.d.Force("test: end the delay") // skips the delay; nothing is in flight
	for name, ch := range map[string]<-chan answer{"sent before the drain": early, "sent during the drain": during} {
		if a := wait(t, ch); a.code != 200 || a.body != "drained\n" {
			t.Errorf("/drained %s = %d %q, want 200 drained", name, a.code, a.body)
		}
	}
	if f.d.Phase() < drain.PhaseStopped {
		t.Errorf("/drained answered in phase %s", f.d.Phase())
	}
	// After the drain: at once.
	if a := wait(t, f.getAsync("/drained?begin_within=0s")); a.code != 200 || a.body != "drained\n" {
		t.Errorf("/drained after the drain = %d %q", a.code, a.body)
	}
}

func TestDrainedBadParameters(t *testing.T) {
	f := newFixture(t, "")
	for _, q := range []string{"?begin_within=soon", "?timeout=-1s", "?timeout=11m"} {
		if a := wait(t, f.getAsync("/drained"+q)); a.code != 400 {
			t.Errorf("/drained%s = %d %q, want 400", q, a.code, a.body)
		}
	}
}

// Without a token on a non-loopback address (0.0.0.0 in a pod), the probes and the hook
// answer anyone, the detailed and state-changing endpoints only loopback clients.
func TestNoTokenOffLoopbackAnswersLocalClientsOnly(t *testing.T) {
	ip := nonLoopbackIP(t)
	d := drain.New(drain.Options{})
	srv, err := Start(Options{Address: "0.0.0.0:0", Drainer: d,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") })})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Addr())
	do := func(method, host, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+net.JoinHostPort(host, port)+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		method, host, path string
		want               int
	}{
		{"GET", ip, "/healthz", 200},
		{"GET", ip, "/readyz", 503}, // starting: the drain has not run
		{"GET", ip, "/drained?begin_within=0s", 200},
		{"GET", ip, "/metrics", 403},
		{"GET", ip, "/status", 403},
		{"POST", ip, "/restart", 403},
		{"POST", ip, "/drain", 403},
		{"GET", "127.0.0.1", "/metrics", 200},
		{"GET", "127.0.0.1", "/status", 200},
	} {
		if got := do(tt.method, tt.host, tt.path); got != tt.want {
			t.Errorf("%s %s from %s = %d, want %d", tt.method, tt.path, tt.host, got, tt.want)
		}
	}
	select {
	case <-d.Requested():
		t.Error("a refused POST /drain drained")
	default:
	}
}

// nonLoopbackIP is an address of this host that is not loopback, to be a client from
// "outside" while staying on this machine.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	testenv.Unavailable(t, "this host has no non-loopback IPv4 address to test from")
	return ""
}
