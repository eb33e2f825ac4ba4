// Package health decides whether the upstream can take traffic. An active check (a TCP
// connect, or an HTTP GET of a path) runs on an interval; passively, every proxied request
// that fails to reach the upstream counts as a failed check. Readiness follows the result,
// and start-up waits for the first success (WaitHealthy), so that a load balancer is never
// told we are ready while the app behind us is not.
//
// Thresholds damp flapping: HealthyThreshold successes in a row turn an unhealthy upstream
// healthy, UnhealthyThreshold failures in a row (checks and requests alike) turn a healthy
// one unhealthy. Before the upstream has answered for the first time, it is checked every
// 100ms (or Interval, if shorter) and one success is enough: start-up should not wait a
// whole interval per step.
package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
)

// Options configures New. Only Upstream is required.
type Options struct {
	// Upstream is the app: http://host:port, https://host:port or unix:///path/to.sock,
	// as given to the proxy. A unix upstream is checked by dialing its socket.
	Upstream *url.URL
	// Path, when set, is requested with GET on the upstream (not prefixed with the
	// upstream URL's path); any status from 200 to 399 passes. Empty: a TCP (or socket)
	// connect is the whole check.
	Path string
	// GRPC makes the check a gRPC health call, grpc.health.v1.Health/Check for
	// GRPCService ("" is the whole server), over HTTP/2 (h2c, or h2 for an https
	// upstream): it passes when the app answers SERVING. Path is then unused.
	GRPC        bool
	GRPCService string
	// Interval is the time between checks (zero: 5s).
	Interval time.Duration
	// Timeout bounds one check, connect included (zero: 2s).
	Timeout time.Duration
	// HealthyThreshold is how many successes in a row turn an unhealthy upstream healthy
	// (zero: 2).
	HealthyThreshold int
	// UnhealthyThreshold is how many failures in a row, checks and proxied requests
	// together, turn a healthy upstream unhealthy (zero: 3).
	UnhealthyThreshold int
	// Logger receives one line per change of health (zero: discard).
	Logger hclog.Logger
}

// startupInterval is the check interval until the upstream first answers.
const startupInterval = 100 * time.Millisecond

// Checker tracks the upstream's health. Build it with New and keep Run running; the other
// methods are safe from any goroutine.
type Checker struct {
	opts  atomic.Pointer[Options] // SetOptions replaces it (reload.go)
	log   hclog.Logger
	probe atomic.Pointer[probe] // how the upstream is checked; SetUpstream replaces it
	// movedAt is when SetUpstream last moved the checks (unix nanoseconds): a request
	// that started before went to the previous upstream and says nothing about this one.
	movedAt atomic.Int64

	healthy atomic.Bool
	// failing mirrors failures != 0, so that a successful request (the common case)
	// costs one atomic load.
	failing atomic.Bool

	mu          sync.Mutex
	answered    bool // the upstream has been healthy at least once
	successes   int  // in a row
	failures    int  // in a row
	failChecks  int  // of failures, how many were active checks
	lastFailure string
	changed     chan struct{} // closed and replaced whenever healthy changes
}

// New returns a Checker that considers the upstream unhealthy until it has answered.
func New(opts Options) *Checker {
	opts = withDefaults(opts)
	c := &Checker{log: opts.Logger, changed: make(chan struct{})}
	c.opts.Store(&opts)
	c.probe.Store(c.probeFor(opts.Upstream))
	return c
}

// withDefaults fills in the zero values of opts as New documents them.
func withDefaults(opts Options) Options {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.HealthyThreshold <= 0 {
		opts.HealthyThreshold = 2
	}
	if opts.UnhealthyThreshold <= 0 {
		opts.UnhealthyThreshold = 3
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Path != "" && !strings.HasPrefix(opts.Path, "/") {
		opts.Path = "/" + opts.Path
	}
	return opts
}

// o is the options in force.
func (c *Checker) o() *Options { return c.opts.Load() }

// probe is how one upstream is checked.
type probe struct {
	address string // what is dialed, for messages: host:port or the socket path
	dial    func(ctx context.Context) (net.Conn, error)
	client  *http.Client // for HTTP checks; nil for connect-only checks
	target  string       // the URL an HTTP check requests
	grpc    *grpcProbe   // for gRPC health checks (grpc.go); nil otherwise
}

func newProbe(u *url.URL, path string) *probe {
	pr := &probe{}
	dialer := &net.Dialer{}
	network, host := "tcp", ""
	scheme := u.Scheme
	switch u.Scheme {
	case "unix", "unix+h2c":
		network, host = "unix", u.Path
		scheme = "http"
	case "https":
		host = hostPort(u, "443")
	default:
		host = hostPort(u, "80")
	}
	pr.address = host
	pr.dial = func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, network, host) }

	if path != "" {
		reqHost := u.Host
		if network == "unix" {
			reqHost = "localhost"
		}
		if scheme != "https" {
			scheme = "http"
		}
		pr.target = (&url.URL{Scheme: scheme, Host: reqHost}).String() + path
		pr.client = &http.Client{
			Transport: &http.Transport{
				Proxy:             nil, // like the proxy: straight to the app
				DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return pr.dial(ctx) },
				TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
				DisableKeepAlives: true, // every check proves a fresh connection works
			},
			// A redirect is an answer; following it would check somewhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		if u.Scheme == "h2c" || u.Scheme == "unix+h2c" { // the app speaks HTTP/2 only
			var protos http.Protocols
			protos.SetUnencryptedHTTP2(true)
			pr.client.Transport.(*http.Transport).Protocols = &protos
		}
	}
	return pr
}

func hostPort(u *url.URL, defaultPort string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), defaultPort)
}

// Address is what the checker dials: host:port, or the socket's path.
func (c *Checker) Address() string { return c.probe.Load().address }

// SetUpstream makes every check from now on go to u (the app restarted elsewhere). The
// health state carries over, since the caller switches only to an upstream that answers;
// the counts in a row start over, and a check of the previous upstream still running is
// not counted.
func (c *Checker) SetUpstream(u *url.URL) {
	pr := c.probeFor(u)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probe.Store(pr)
	c.movedAt.Store(time.Now().UnixNano())
	c.successes, c.failures, c.failChecks = 0, 0, 0
	c.failing.Store(false)
	c.log.Info("checking a new upstream", "upstream", pr.address)
}

// Healthy reports whether the upstream passes its checks.
func (c *Checker) Healthy() bool { return c.healthy.Load() }

// Reason says in one line why the upstream is unhealthy, or "" while it is healthy.
func (c *Checker) Reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reasonLocked()
}

func (c *Checker) reasonLocked() string {
	if c.healthy.Load() {
		return ""
	}
	if c.failures == 0 {
		if !c.answered {
			return fmt.Sprintf("upstream %s: has not answered yet", c.Address())
		}
		return fmt.Sprintf("upstream %s: recovering (%d of %d checks passed)",
			c.Address(), c.successes, c.o().HealthyThreshold)
	}
	return fmt.Sprintf("upstream %s: %s (%s in a row)", c.Address(), c.lastFailure, c.countFailures())
}

func (c *Checker) countFailures() string {
	checks, requests := c.failChecks, c.failures-c.failChecks
	plural := func(n int, what string) string {
		if n == 1 {
			return "1 " + what
		}
		return fmt.Sprintf("%d %ss", n, what)
	}
	switch {
	case requests == 0:
		return plural(checks, "failed check")
	case checks == 0:
		return plural(requests, "failed request")
	}
	return plural(checks, "failed check") + " and " + plural(requests, "failed request")
}

// WaitHealthy returns nil once the upstream is healthy, or an error naming the upstream
// when ctx ends first. Run must be running for the upstream to become healthy.
func (c *Checker) WaitHealthy(ctx context.Context) error {
	for {
		c.mu.Lock()
		healthy, changed := c.healthy.Load(), c.changed
		c.mu.Unlock()
		if healthy {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for upstream %s to become healthy: %w (last: %s)",
				c.Address(), ctx.Err(), c.Reason())
		}
	}
}

// Run checks the upstream until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	how := "connect"
	if pr := c.probe.Load(); pr.grpc != nil {
		how = pr.grpc.describe()
	} else if pr.client != nil {
		how = "GET " + pr.target
	}
	c.log.Info("checking the upstream", "upstream", c.Address(), "check", how,
		"interval", c.o().Interval.String(), "timeout", c.o().Timeout.String())
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		pr := c.probe.Load()
		err := c.check(ctx, pr)
		if ctx.Err() != nil {
			return // the check was cut short: it says nothing about the upstream
		}
		c.recordFor(pr, err)
		c.mu.Lock()
		next := c.o().Interval
		if !c.answered {
			next = min(startupInterval, c.o().Interval)
		}
		c.mu.Unlock()
		timer.Reset(next)
	}
}

// CheckNow runs one check and records its result, as Run does on its interval.
func (c *Checker) CheckNow(ctx context.Context) error {
	pr := c.probe.Load()
	err := c.check(ctx, pr)
	if ctx.Err() == nil {
		c.recordFor(pr, err)
	}
	return err
}

// recordFor records an active check of pr, unless SetUpstream replaced pr meanwhile.
func (c *Checker) recordFor(pr *probe, err error) {
	if c.probe.Load() == pr {
		c.record(err, true)
	}
}

// check runs one active check and returns why it failed, in a few words.
func (c *Checker) check(ctx context.Context, pr *probe) error {
	ctx, cancel := context.WithTimeout(ctx, c.o().Timeout)
	defer cancel()
	if pr.grpc != nil {
		return c.checkGRPC(ctx, pr.grpc)
	}
	if pr.client == nil {
		conn, err := pr.dial(ctx)
		if err != nil {
			return c.describe(err)
		}
		conn.Close()
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "drainproxy-health-check")
	resp, err := pr.client.Do(req)
	if err != nil {
		return c.describe(err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s answered %d", c.o().Path, resp.StatusCode)
	}
	return nil
}

// describe shortens a dial or round-trip error to what an operator needs.
func (c *Checker) describe(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	case errors.Is(err, os.ErrNotExist):
		return errors.New("no socket at that path")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no answer within %v", c.o().Timeout)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("connection reset")
	}
	return err
}

// Observe implements drain.Observer: a proxied request that could not reach the upstream
// (refused, reset, timed out) counts as a failed check; one that got the upstream's answer
// ends a run of failures. It never makes an unhealthy upstream healthy: that takes active
// checks. A request that started before the upstream last moved (SetUpstream) is not
// counted: it went to the previous upstream (an app instance that a restart retired, still
// finishing its requests), whose failures say nothing about the one in service.
func (c *Checker) Observe(x *drain.Exchange) {
	if moved := c.movedAt.Load(); moved != 0 && x.Start.UnixNano() < moved {
		return
	}
	switch x.UpstreamError {
	case "":
		if x.Status != proxy.StatusClientClosedRequest && c.failing.Load() {
			c.record(nil, false)
		}
	case proxy.ReasonRefused, proxy.ReasonReset, proxy.ReasonTimeout:
		c.record(errors.New(passiveReason(x.UpstreamError)), false)
	}
}

// ReportResult counts one exchange with the upstream that another part observed.
func (c *Checker) ReportResult(failed bool) {
	if failed {
		c.record(errors.New("request failed"), false)
	} else if c.failing.Load() {
		c.record(nil, false)
	}
}

func passiveReason(reason string) string {
	switch reason {
	case proxy.ReasonRefused:
		return "connection refused"
	case proxy.ReasonReset:
		return "connection reset"
	case proxy.ReasonTimeout:
		return "request timed out"
	}
	return reason
}

// record counts one result. active says it came from a check (only those may make the
// upstream healthy).
func (c *Checker) record(err error, active bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.healthy.Load()
	if err == nil {
		c.failures, c.failChecks = 0, 0
		c.failing.Store(false)
		if !active {
			return
		}
		c.successes++
		if !was && (!c.answered || c.successes >= c.o().HealthyThreshold) {
			first := !c.answered
			c.answered = true
			c.setHealthy(true)
			if first {
				c.log.Info("upstream answered", "upstream", c.Address())
			} else {
				c.log.Info("upstream healthy again", "upstream", c.Address(), "checks_passed", c.successes)
			}
		}
		return
	}
	c.successes = 0
	c.failures++
	if active {
		c.failChecks++
	}
	c.failing.Store(true)
	c.lastFailure = err.Error()
	if was && c.failures >= c.o().UnhealthyThreshold {
		c.setHealthy(false)
		c.log.Warn("upstream unhealthy", "upstream", c.Address(), "reason", c.reasonLocked())
	} else if !c.answered && c.failures == 1 {
		c.log.Info("waiting for the upstream to answer", "upstream", c.Address(), "error", c.lastFailure)
	}
}

// setHealthy changes the state and wakes WaitHealthy. c.mu must be held.
func (c *Checker) setHealthy(h bool) {
	c.healthy.Store(h)
	close(c.changed)
	c.changed = make(chan struct{})
}
