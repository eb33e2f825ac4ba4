package admin

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/health"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

// fixture is a real drainer (no public servers) gated by a real checker of a real
// upstream listener, and the admin server in front of them.
type fixture struct {
	t        *testing.T
	d        *drain.Drainer
	checker  *health.Checker
	upstream string // host:port the checker connects to
	srv      *Server
	logs     *testlog.Buffer
	summary  chan drain.Summary
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream := ln.Addr().String()
	ln.Close() // the upstream starts down

	f := &fixture{t: t, upstream: upstream, logs: &testlog.Buffer{}, summary: make(chan drain.Summary, 1)}
	log := hclog.New(&hclog.LoggerOptions{Output: f.logs, Level: hclog.Debug})
	f.checker = health.New(health.Options{
		Upstream: &url.URL{Scheme: "http", Host: upstream}, Interval: 20 * time.Millisecond,
		HealthyThreshold: 1, UnhealthyThreshold: 1, Logger: log,
	})
	f.d = drain.New(drain.Options{Gate: f.checker.WaitHealthy, Delay: time.Hour, Logger: log})
	f.d.Workers.Go("health", f.checker.Run)
	f.srv, err = Start(Options{
		Address: "127.0.0.1:0", Token: token, Drainer: f.d, Health: f.checker,
		Metrics:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") }),
		Upstream: "http://" + upstream, ConfigSource: "test.hcl", Version: "v9", Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.srv.Close)
	return f
}

// run starts the drain's Run, as the program does after starting the admin listener.
func (f *fixture) run() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { f.summary <- f.d.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		f.d.Force("test over")
		<-f.summary
	})
}

// upstreamUp listens on the upstream address until the test ends; it returns the listener.
func (f *fixture) upstreamUp() net.Listener {
	f.t.Helper()
	ln, err := net.Listen("tcp", f.upstream)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { ln.Close() })
	return ln
}

func (f *fixture) do(method, path, token string) (int, http.Header, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, "http://"+f.srv.Addr()+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// waitReadyz polls /readyz until it answers status with a body starting with prefix.
func (f *fixture) waitReadyz(status int, prefix string) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, body := f.do("GET", "/readyz", "")
		if code == status && strings.HasPrefix(body, prefix) {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("/readyz = %d %q; want %d %q...", code, body, status, prefix)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Readiness across start, ready, upstream down, up again, and a drain.
func TestReadiness(t *testing.T) {
	f := newFixture(t, "")
	f.waitReadyz(503, "starting: upstream "+f.upstream+": connection refused")
	f.run()
	f.waitReadyz(503, "starting: upstream "+f.upstream+": connection refused")

	ln := f.upstreamUp()
	f.waitReadyz(200, "ready\n")

	ln.Close()
	f.waitReadyz(503, "upstream unhealthy: upstream "+f.upstream+": connection refused (")
	if code, _, _ := f.do("GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz = %d while the upstream is down; liveness must not follow the upstream", code)
	}

	f.upstreamUp()
	f.waitReadyz(200, "ready\n")

	code, _, body := f.do("POST", "/drain", "")
	if code != http.StatusAccepted || body != "draining\n" {
		t.Errorf("POST /drain = %d %q", code, body)
	}
	f.waitReadyz(503, "draining\n")
	if code, _, body := f.do("POST", "/drain", ""); code != http.StatusAccepted || body != "already draining\n" {
		t.Errorf("second POST /drain = %d %q; want it accepted and idempotent", code, body)
	}
	if code, _, _ := f.do("GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz = %d while draining", code)
	}
	if !strings.Contains(f.logs.String(), `reason="admin POST /drain"`) {
		t.Errorf("the drain does not name the admin request as its reason:\n%s", f.logs)
	}
}

func TestDrainRefusesGet(t *testing.T) {
	f := newFixture(t, "")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")
	code, h, _ := f.do("GET", "/drain", "")
	if code != http.StatusMethodNotAllowed || !strings.Contains(h.Get("Allow"), "POST") {
		t.Errorf("GET /drain = %d, Allow %q; want 405 and Allow: POST", code, h.Get("Allow"))
	}
	f.waitReadyz(200, "ready\n") // and no drain began
}

func TestToken(t *testing.T) {
	const token = "0123456789abcdef"
	f := newFixture(t, token)
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n") // probes need no token

	for _, tt := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", "wrong", 401},
		{"GET", "/metrics", token + "x", 401},
		{"GET", "/metrics", token[:len(token)-1], 401},
		{"GET", "/status", "wrong", 401},
		{"POST", "/drain", "wrong", 401},
		{"GET", "/metrics", token, 200},
		{"GET", "/status", token, 200},
	} {
		code, h, _ := f.do(tt.method, tt.path, tt.token)
		if code != tt.want {
			t.Errorf("%s %s with token %q = %d, want %d", tt.method, tt.path, tt.token, code, tt.want)
		}
		if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", h.Get("WWW-Authenticate"))
		}
	}
	f.waitReadyz(200, "ready\n") // the refused POST /drain did not drain

	req, _ := http.NewRequest("GET", "http://"+f.srv.Addr()+"/metrics", nil)
	req.Header.Set("Authorization", "Basic "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("the token as Basic credentials = %d, want 401", resp.StatusCode)
	}

	if code, _, _ := f.do("POST", "/drain", token); code != http.StatusAccepted {
		t.Errorf("POST /drain with the token = %d", code)
	}
	f.waitReadyz(503, "draining")
}

func TestStatus(t *testing.T) {
	f := newFixture(t, "")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")
	code, h, body := f.do("GET", "/status", "")
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/status = %d %s", code, h.Get("Content-Type"))
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	if st.Phase != "ready" || !st.Ready || !st.Upstream.Checked || !st.Upstream.Healthy ||
		st.Upstream.URL != "http://"+f.upstream || st.Config != "test.hcl" || st.Version != "v9" ||
		st.UptimeSeconds <= 0 || st.PID == 0 {
		t.Errorf("status = %+v", st)
	}
	f.do("POST", "/drain", "")
	// The drain's goroutine enters its first step a moment after POST /drain returns.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, _, body = f.do("GET", "/status", "")
		st = Status{}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		if st.Drain != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.Phase != "draining" || st.Ready || st.NotReadyReason != "draining" {
		t.Errorf("status while draining = %+v", st)
	}
	// Issue 25: the drain's clock and the in-flight list (empty: no public server here).
	if st.Drain == nil || st.Drain.Step != drain.StepDelay || st.Drain.Reason != "admin POST /drain" ||
		!st.Drain.Deadline.After(st.Drain.Started) || st.Inflight == nil || st.Inflight.Total != 0 {
		t.Errorf("status while draining: drain %+v, inflight %+v", st.Drain, st.Inflight)
	}
	if code, _, body := f.do("GET", "/status?inflight=many", ""); code != 400 || !strings.Contains(body, "?inflight=") {
		t.Errorf("/status?inflight=many = %d %q; want 400 saying what it takes", code, body)
	}
	if code, _, body := f.do("GET", "/status?wait_drained=forever", ""); code != 400 || !strings.Contains(body, "wait_drained") {
		t.Errorf("/status?wait_drained=forever = %d %q; want 400", code, body)
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_, err = Start(Options{Address: ln.Addr().String(), Drainer: drain.New(drain.Options{})})
	if err == nil || !strings.Contains(err.Error(), "port "+port+" is already in use") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error = %v; want one line naming port %s", err, port)
	}
}

// The server stays up until Stop, and Stop lets a request in progress finish.
func TestStopWaitsForRequest(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	srv, err := Start(Options{
		Address: "127.0.0.1:0", Drainer: drain.New(drain.Options{}),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			close(started)
			<-release
			io.WriteString(w, "done\n")
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + srv.Addr() + "/metrics")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) with a request in progress", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if b := <-got; b != "done\n" {
		t.Errorf("the request in progress got %q", b)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := net.Dial("tcp", srv.Addr()); err == nil {
		t.Error("the admin port still accepts after Stop")
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tt := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"127.1.2.3", true}, {"::1", true},
		{"0.0.0.0", false}, {"::", false}, {"10.0.0.1", false},
	} {
		if got := isLoopback(&net.TCPAddr{IP: net.ParseIP(tt.ip)}); got != tt.want {
			t.Errorf("isLoopback(%s) = %v", tt.ip, got)
		}
	}
}

// POST /drain?hold=true starts the drain and asks it to hold; a bad hold value is 400 and
// starts nothing.
func TestDrainHold(t *testing.T) {
	f := newFixture(t, "")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")
	if code, _, body := f.do("POST", "/drain?hold=maybe", ""); code != http.StatusBadRequest {
		t.Errorf("POST /drain?hold=maybe = %d %q, want 400", code, body)
	}
	f.waitReadyz(200, "ready\n") // the bad request did not drain
	if code, _, body := f.do("POST", "/drain?hold=true", ""); code != http.StatusAccepted || body != "draining; holding after the drain until SIGTERM\n" {
		t.Errorf("POST /drain?hold=true = %d %q", code, body)
	}
	f.waitReadyz(503, "draining\n")
	if code, _, body := f.do("POST", "/drain?hold=true", ""); code != http.StatusAccepted || body != "already draining; holding after the drain until SIGTERM\n" {
		t.Errorf("a second POST /drain?hold=true = %d %q", code, body)
	}
	if !strings.Contains(f.logs.String(), `reason="admin POST /drain?hold=true"`) {
		t.Errorf("the drain does not name the held admin request as its reason:\n%s", f.logs)
	}
}
