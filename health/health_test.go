package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/proxy"
)

// listen returns a listener on a fresh 127.0.0.1 port, closed at the end of the test.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve serves h on ln until the test ends and returns a function that stops it early.
func serve(t *testing.T, ln net.Listener, h http.Handler) (stop func()) {
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return func() { srv.Close() }
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// checkN runs n checks and returns the last error.
func checkN(t *testing.T, c *Checker, n int) error {
	t.Helper()
	var err error
	for range n {
		err = c.CheckNow(context.Background())
	}
	return err
}

// A connect-only check follows the upstream through start, an outage and its return, with
// the thresholds applied after the first answer.
func TestConnectCheckThresholds(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens yet

	c := New(Options{Upstream: mustParse(t, "http://"+addr), HealthyThreshold: 2, UnhealthyThreshold: 3, Timeout: time.Second})
	if c.Healthy() {
		t.Fatal("healthy before any check")
	}
	if r := c.Reason(); !strings.Contains(r, addr) || !strings.Contains(r, "not answered yet") {
		t.Errorf("reason before checks = %q", r)
	}
	if err := checkN(t, c, 2); err == nil || c.Healthy() {
		t.Fatalf("check with nothing listening: err %v, healthy %v", err, c.Healthy())
	}
	want := "upstream " + addr + ": connection refused (2 failed checks in a row)"
	if r := c.Reason(); r != want {
		t.Errorf("reason = %q, want %q", r, want)
	}

	ln = listen(t, addr)
	if err := checkN(t, c, 1); err != nil || !c.Healthy() {
		t.Fatalf("first answer: err %v, healthy %v; one success is enough at start-up", err, c.Healthy())
	}
	if r := c.Reason(); r != "" {
		t.Errorf("reason while healthy = %q, want empty", r)
	}

	ln.Close()
	checkN(t, c, 2)
	if !c.Healthy() {
		t.Fatal("unhealthy after 2 failures; the threshold is 3")
	}
	checkN(t, c, 1)
	if c.Healthy() {
		t.Fatal("still healthy after 3 failures")
	}
	if r := c.Reason(); r != "upstream "+addr+": connection refused (3 failed checks in a row)" {
		t.Errorf("reason = %q", r)
	}

	listen(t, addr)
	checkN(t, c, 1)
	if c.Healthy() {
		t.Fatal("healthy after 1 success; the threshold is 2")
	}
	if r := c.Reason(); !strings.Contains(r, "recovering (1 of 2") {
		t.Errorf("reason while recovering = %q", r)
	}
	checkN(t, c, 1)
	if !c.Healthy() {
		t.Fatal("unhealthy after 2 successes")
	}
}

func TestHTTPCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusInternalServerError)
	var gotPath atomic.Value
	ln := listen(t, "127.0.0.1:0")
	serve(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		if status.Load() == http.StatusFound {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	// The upstream's own path prefix is not put before the check's path.
	c := New(Options{Upstream: mustParse(t, "http://"+ln.Addr().String()+"/api"), Path: "healthz",
		HealthyThreshold: 1, UnhealthyThreshold: 1})

	err := c.CheckNow(context.Background())
	if err == nil || err.Error() != "GET /healthz answered 500" || c.Healthy() {
		t.Fatalf("500: err %v, healthy %v", err, c.Healthy())
	}
	if p := gotPath.Load(); p != "/healthz" {
		t.Errorf("checked path %v, want /healthz", p)
	}
	for _, s := range []int32{http.StatusOK, http.StatusNoContent, http.StatusFound} {
		status.Store(s)
		if err := c.CheckNow(context.Background()); err != nil || !c.Healthy() {
			t.Errorf("status %d: err %v, healthy %v", s, err, c.Healthy())
		}
	}
	if p := gotPath.Load(); p != "/healthz" {
		t.Errorf("the redirect was followed to %v", p)
	}
}

func TestHTTPCheckTimeout(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	serve(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	c := New(Options{Upstream: mustParse(t, "http://"+ln.Addr().String()), Path: "/", Timeout: 100 * time.Millisecond})
	err := c.CheckNow(context.Background())
	if err == nil || err.Error() != "no answer within 100ms" {
		t.Fatalf("err = %v, want no answer within 100ms", err)
	}
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	u := mustParse(t, "unix://"+sock)
	c := New(Options{Upstream: u, Path: "/up", UnhealthyThreshold: 1, HealthyThreshold: 1})
	if err := c.CheckNow(context.Background()); err == nil || err.Error() != "no socket at that path" {
		t.Fatalf("no socket: err %v", err)
	}
	if r := c.Reason(); !strings.Contains(r, "upstream "+sock+": no socket at that path") {
		t.Errorf("reason = %q", r)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var host atomic.Value
	serve(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { host.Store(r.Host) }))
	if err := c.CheckNow(context.Background()); err != nil || !c.Healthy() {
		t.Fatalf("socket serving: err %v, healthy %v", err, c.Healthy())
	}
	if h := host.Load(); h != "localhost" {
		t.Errorf("Host %v, want localhost", h)
	}
}

// Proxied requests that cannot reach the upstream count towards unhealthy; one that gets
// an answer breaks the run; none makes an unhealthy upstream healthy.
func TestPassiveFailures(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	c := New(Options{Upstream: mustParse(t, "http://"+ln.Addr().String()), UnhealthyThreshold: 3, HealthyThreshold: 1})
	checkN(t, c, 1)
	if !c.Healthy() {
		t.Fatal("not healthy with a listener")
	}
	failed := &drain.Exchange{Status: 502, UpstreamError: proxy.ReasonRefused}
	ok := &drain.Exchange{Status: 200}
	c.Observe(failed)
	c.Observe(failed)
	c.Observe(ok)
	c.Observe(failed)
	c.Observe(failed)
	c.Observe(&drain.Exchange{Status: 413, UpstreamError: proxy.ReasonBodyTooLarge})   // the client's fault
	c.Observe(&drain.Exchange{Status: 400, UpstreamError: proxy.ReasonBadRequest})     // so is a broken body
	c.Observe(&drain.Exchange{Status: 504, UpstreamError: proxy.ReasonClientDeadline}) // and its own deadline
	c.Observe(&drain.Exchange{Status: 503, UpstreamError: proxy.ReasonOverloaded})     // and our cap
	if !c.Healthy() {
		t.Fatal("unhealthy without 3 failures in a row")
	}
	c.Observe(&drain.Exchange{Status: 504, UpstreamError: proxy.ReasonTimeout})
	if c.Healthy() {
		t.Fatal("healthy after 3 failed requests in a row")
	}
	if r, want := c.Reason(), "request timed out (3 failed requests in a row)"; !strings.HasSuffix(r, want) {
		t.Errorf("reason = %q, want it to end with %q", r, want)
	}
	c.Observe(ok)
	if c.Healthy() {
		t.Fatal("a proxied request made the upstream healthy; only checks may")
	}
	checkN(t, c, 1)
	if !c.Healthy() {
		t.Fatal("a passed check did not make it healthy (threshold 1)")
	}

	c.ReportResult(true)
	ln.Close()
	c.CheckNow(context.Background())
	c.ReportResult(true)
	if c.Healthy() {
		t.Fatal("healthy after 3 failures in a row")
	}
	if r := c.Reason(); !strings.HasSuffix(r, "(1 failed check and 2 failed requests in a row)") {
		t.Errorf("mixed reason = %q", r)
	}
}

func TestWaitHealthy(t *testing.T) {
	addr := testenv.FreeAddr(t) // outside the ephemeral range: no other listener takes it meanwhile
	c := New(Options{Upstream: mustParse(t, "http://"+addr), Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })

	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	err := c.WaitHealthy(short)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "upstream "+addr) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("WaitHealthy with nothing listening = %v", err)
	}

	// The start-up interval is short even though Interval is an hour.
	listen(t, addr)
	long, cancelLong := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelLong()
	if err := c.WaitHealthy(long); err != nil {
		t.Fatalf("WaitHealthy once listening: %v", err)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	c := New(Options{Upstream: mustParse(t, "http://"+ln.Addr().String()), Interval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); c.Run(ctx) }()
	if err := c.WaitHealthy(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// A request that succeeds costs one atomic load, and never allocates.
func TestObserveSuccessDoesNotAllocate(t *testing.T) {
	c := New(Options{Upstream: mustParse(t, "http://127.0.0.1:1")})
	x := &drain.Exchange{Status: 200}
	if n := testing.AllocsPerRun(1000, func() { c.Observe(x) }); n != 0 {
		t.Errorf("Observe allocates %v times per request", n)
	}
}

// After SetUpstream the checks go to the new address: a checker that followed an app to
// a port where nothing listens turns unhealthy, and says which address failed.
func TestSetUpstreamChecksTheNewAddress(t *testing.T) {
	up := httptestServe(t)
	c := New(Options{Upstream: up, UnhealthyThreshold: 1})
	ctx := context.Background()
	if err := c.CheckNow(ctx); err != nil || !c.Healthy() {
		t.Fatalf("first upstream: %v, healthy %v", err, c.Healthy())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	ln.Close()
	c.SetUpstream(gone)
	if c.Address() != gone.Host {
		t.Fatalf("Address %q, want %q", c.Address(), gone.Host)
	}
	if !c.Healthy() {
		t.Fatal("SetUpstream changed the health state")
	}
	if err := c.CheckNow(ctx); err == nil {
		t.Fatal("a check of an address where nothing listens passed: still checking the old one?")
	}
	if c.Healthy() || !strings.Contains(c.Reason(), gone.Host) {
		t.Fatalf("healthy %v, reason %q; want unhealthy naming %s", c.Healthy(), c.Reason(), gone.Host)
	}
}

func httptestServe(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// Requests that started before SetUpstream went to the previous upstream (an app instance
// a restart retired): their failures never count against the one now checked, however
// many; those that started after do.
func TestPassiveFailuresOfThePreviousUpstreamDoNotCount(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	c := New(Options{Upstream: mustParse(t, "http://"+ln.Addr().String()), UnhealthyThreshold: 2, HealthyThreshold: 1})
	checkN(t, c, 1)
	before := time.Now()
	next := listen(t, "127.0.0.1:0")
	c.SetUpstream(mustParse(t, "http://"+next.Addr().String()))
	for range 10 {
		c.Observe(&drain.Exchange{Start: before, Status: 502, UpstreamError: proxy.ReasonRefused})
	}
	if !c.Healthy() {
		t.Fatalf("unhealthy after failures of requests to the previous upstream: %s", c.Reason())
	}
	after := time.Now().Add(time.Millisecond)
	for range 2 {
		c.Observe(&drain.Exchange{Start: after, Status: 502, UpstreamError: proxy.ReasonRefused})
	}
	if c.Healthy() {
		t.Fatal("still healthy after 2 failed requests to the upstream in service")
	}
}
