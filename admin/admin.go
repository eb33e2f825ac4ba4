// Package admin is the listener orchestrators and operators talk to: liveness, readiness,
// Prometheus metrics, a drain on demand and a status page. It is its own http.Server on its
// own address (loopback by default), never part of the public listener, and it is not added
// to the drain: its requests are not in-flight traffic, and it keeps answering through the
// whole drain so that /readyz can say 503 and /metrics can be scraped until the end.
//
// Endpoints:
//
//	GET  /healthz  200 while the process is alive (it does not depend on the upstream)
//	GET  /readyz   200 when serving, the upstream (and a supervised app) is up and no drain
//	               has begun; else 503
//	GET  /drained  a pod's preStop hook: 200 once a drain has finished waiting (drained.go)
//	GET  /metrics  Prometheus text
//	POST /drain    start the same drain as SIGTERM (idempotent); with ?hold=true the
//	               process stays up after it until its own SIGTERM (drainproxy drain)
//	POST /restart  restart the supervised app without downtime, as SIGHUP does: 202
//	               started, 409 not supervised or already restarting, 503 draining
//	GET  /status   JSON: phase, counts, uptime, upstream and its health, config source, the
//	               drain's step and deadline, and what is in flight (oldest first, at most
//	               100; ?inflight=N for another cap up to 1000, 0 for the counts only);
//	               ?wait_drained=DUR answers once the drain has finished waiting, or after
//	               DUR (a watcher that must not miss the outcome of a process about to exit)
//
// With a token, every endpoint except the probes (/healthz, /readyz, /drained) needs
// "Authorization: Bearer TOKEN": probes keep working without a secret, while draining the
// process and reading its metrics and status do not. Without a token on an address that
// is not loopback (a pod's 0.0.0.0, so that kubelet can probe it), those endpoints answer
// only clients on loopback: the pod's own containers. guard.go keeps web pages out: every
// endpoint but the probes answers only a Host that names this listener, and POSTs refuse
// cross-site requests.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/netutil"

	"github.com/drainproxy/drainproxy/listener"

	"github.com/drainproxy/drainproxy/drain"
)

// Drainer is what the admin endpoints need of the drain (drain.Drainer).
type Drainer interface {
	Stats() drain.Stats
	Drain(reason string)
}

// Health is what the admin endpoints need of the upstream checker (health.Checker).
type Health interface {
	Healthy() bool
	Reason() string
}

// App is what readiness needs of the supervised app (supervise.App).
type App interface {
	// NotServing says why requests cannot reach the app now, or "" when they can.
	NotServing() string
}

// Holder is what POST /drain?hold=true needs of the drain (drain.Drainer).
type Holder interface {
	// DrainAndHold starts the drain, and keeps the process up after it until it is
	// told to stop (its own SIGTERM).
	DrainAndHold(reason string)
}

// Restarter is what POST /restart needs of the supervised app (supervise.App).
type Restarter interface {
	// Restart starts a zero-downtime restart in the background, or says why it cannot.
	Restart(reason string) error
}

// Options configures Start. Address and Drainer are required.
type Options struct {
	// Address is host:port to listen on; port 0 picks a free one.
	Address string
	// Listener, when set, is the socket to serve, already bound to Address (one handed
	// over by the process this one upgrades); nil listens on Address.
	Listener net.Listener
	// Token, when not empty, is the bearer token every endpoint but the probes requires.
	Token string
	// AllowedHosts are host names (lower case, no port) accepted in Host besides loopback
	// names and addresses, the address a request arrived on and Address's host (nil: none).
	AllowedHosts []string
	Drainer      Drainer
	// Health, when set, gates readiness and is shown on /status (nil: the upstream is
	// not checked, and readiness follows the drain alone).
	Health Health
	// Metrics serves /metrics (nil: 404).
	Metrics http.Handler
	// Restarter, when set, serves POST /restart (nil: no app is supervised; 409).
	Restarter Restarter
	// App, when set, gates readiness too: /readyz is 503 while the supervised app is not
	// running or has not answered since it restarted (nil: no app is supervised).
	App App
	// Upstream, ConfigSource and Version are shown on /status.
	Upstream string
	// CurrentUpstream, when set, is asked for the upstream on each /status, so that it
	// follows a zero-downtime restart to the new instance (nil: Upstream).
	CurrentUpstream func() string
	ConfigSource    string
	Version         string
	// Started is when the process started, for the uptime (zero: when Start was called).
	Started time.Time
	// Logger receives the listener's lines and each drain request (zero: discard).
	Logger hclog.Logger
}

// Server is the running admin listener.
type Server struct {
	opts   Options
	log    hclog.Logger
	http   *http.Server
	ln     net.Listener
	token  atomic.Pointer[tokenCheck] // SetToken replaces it (token.go)
	served chan struct{}              // closed when Serve has returned

	allowed     map[string]bool // Options.AllowedHosts
	crossOrigin *http.CrossOriginProtection

	// offLoopback: the listener is reachable from elsewhere, so without a token the
	// authorized endpoints need a loopback client.
	offLoopback bool

	drainedWaits atomic.Int64 // GET /drained calls waiting now (drained.go)
	maxConns     int          // the admin listener's connection cap (adminConnCap)
	failures     tokenFailures
}

// maxAdminConns caps the admin listener's connections, so that nobody can take the
// process's descriptors through it (the probes and /drained need no token): past it new
// ones wait in the kernel's queue. Kubelet, a Prometheus scraper and an operator need a
// handful. Under a low descriptor limit the cap is lower still (adminConnCap).
const maxAdminConns = 128

// adminConnCap is the admin listener's connection cap under a descriptor limit of nofile:
// at most a quarter of the descriptors, so that three quarters stay in reserve for the
// public listeners and the upstream connections whatever happens on the admin plane; at
// least 16, and at most maxAdminConns.
func adminConnCap(nofile uint64) int {
	return int(min(max(nofile/4, 16), maxAdminConns))
}

// descriptorLimit is the process's soft limit on open files (maxAdminConns*4 when unknown).
func descriptorLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return maxAdminConns * 4
	}
	return rl.Cur
}

// Start listens on opts.Address and serves the admin endpoints until Stop.
func Start(opts Options) (*Server, error) {
	if opts.Drainer == nil {
		return nil, errors.New("admin: no drainer")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Address); err != nil {
			return nil, listenError(opts.Address, err)
		}
	}
	maxConns := adminConnCap(descriptorLimit())
	ln = netutil.LimitListener(listener.WarnOutOfDescriptors(ln, opts.Logger), maxConns)
	s := &Server{opts: opts, log: opts.Logger, ln: ln, served: make(chan struct{}), maxConns: maxConns,
		allowed: make(map[string]bool), crossOrigin: http.NewCrossOriginProtection()}
	for _, h := range opts.AllowedHosts {
		s.allowed[h] = true
	}
	// Without a token, the detailed and state-changing endpoints of a listener reachable
	// from elsewhere (0.0.0.0 in a pod, so that kubelet can probe it) answer local clients only.
	s.offLoopback = !isLoopback(ln.Addr())
	if host, _, err := net.SplitHostPort(opts.Address); err == nil && host != "" {
		s.allowed[strings.ToLower(host)] = true // the name it was told to listen on
	}
	s.SetToken(opts.Token)
	// Short header timeout and no keep-alive: a connection that sends nothing gives its
	// place under the connection cap back within seconds, and one that got its answer at
	// once, so that probes queued behind a flood get through (admin clients are few and
	// reconnect; kubelet opens a connection per probe anyway).
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 2 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       5 * time.Second, // unused while keep-alives are off; a bound if turned on
		MaxHeaderBytes:    16 << 10,
		ErrorLog: opts.Logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{
			InferLevels: true, ForceLevel: hclog.Debug,
		}),
	}
	s.http.SetKeepAlivesEnabled(false)
	if opts.Token == "" && !isLoopback(ln.Addr()) {
		s.log.Info("the admin listener is not on loopback and has no token: /healthz, /readyz and /drained answer anyone, /metrics, /status, POST /drain and POST /restart only clients on loopback (this host, or this pod); set admin { token_file = ... } to reach them from elsewhere",
			"admin", ln.Addr().String())
	}
	go func() {
		defer close(s.served)
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "admin", ln.Addr().String(), "error", err.Error())
		}
	}()
	return s, nil
}

// listenError says which address could not be used and what to do about it.
func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		_, port, _ := net.SplitHostPort(addr)
		return fmt.Errorf("admin listener: port %s is already in use (%s); choose another with -admin ADDR or admin { address = ... }, or \"off\"", port, addr)
	}
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Errorf("admin listener: %s is not an address of this host; use 127.0.0.1:PORT or another local address", addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("admin listener: %s: permission denied; use a port above 1023", addr)
	}
	return fmt.Errorf("admin listener on %s: %w", addr, err)
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// Addr is the address the admin listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop lets requests in progress finish (until ctx ends), then closes the listener and
// every connection, and waits for the server to stop.
func (s *Server) Stop(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	<-s.served
	return err
}

// Handler is the admin endpoints' handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range s.probeEndpoints() {
		mux.Handle(pattern, h)
	}
	// For operators and their tools: this listener's own Host, the token, and for
	// POSTs no cross-site request (guard.go).
	for pattern, h := range s.operatorEndpoints() {
		mux.Handle(pattern, s.operator(h()))
	}
	return mux
}

// probeEndpoints are the probes, by pattern: read-only, for orchestrators, which call
// them on the pod IP or a service name. They answer any Host and need no token. A new
// probe is one more line here; everything else goes in operatorEndpoints.
func (s *Server) probeEndpoints() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /healthz": s.healthz,
		"GET /readyz":  s.readyz,
		"GET /drained": s.drained, // a pod's preStop hook (drained.go)
	}
}

// operatorEndpoints are the endpoints behind s.operator, by pattern. The handlers are
// made on demand, so that Endpoints can list the patterns of a zero Server.
func (s *Server) operatorEndpoints() map[string]func() http.Handler {
	return map[string]func() http.Handler{
		"GET /metrics":  s.metrics,
		"POST /drain":   func() http.Handler { return http.HandlerFunc(s.drain) },
		"POST /restart": func() http.Handler { return http.HandlerFunc(s.restart) },
		"GET /status":   func() http.Handler { return http.HandlerFunc(s.status) },
	}
}

// Endpoints lists every endpoint's pattern ("GET /readyz", "POST /drain"), sorted, for
// help texts and the test that holds -admin's help to them.
func Endpoints() []string {
	s := &Server{}
	var out []string
	for p := range s.probeEndpoints() {
		out = append(out, p)
	}
	for p := range s.operatorEndpoints() {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// authorized requires the bearer token, when there is one. Both sides are hashed first,
// so that the comparison takes the same time whatever the length of the guess.
func (s *Server) authorized(next http.Handler) http.Handler {
	local := loopbackOnly(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := s.token.Load()
		if !token.set {
			if s.offLoopback {
				local.ServeHTTP(w, r)
			} else {
				next.ServeHTTP(w, r)
			}
			return
		}
		got, err := bearerToken(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if err != nil || subtle.ConstantTimeCompare(sum[:], token.sum[:]) != 1 {
			s.tokenFailed(r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="drainproxy admin"`)
			plain(w, http.StatusUnauthorized, "unauthorized: send Authorization: Bearer <admin token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackOnly refuses clients that are not on loopback: on a pod's shared network
// namespace that means the pod's own containers (and kubectl port-forward), never another
// pod or a load balancer.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			plain(w, http.StatusForbidden, "forbidden: without admin { token } this endpoint answers only clients on loopback; set a token and send Authorization: Bearer <admin token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) metrics() http.Handler {
	if s.opts.Metrics == nil {
		return http.NotFoundHandler()
	}
	return s.opts.Metrics
}

// healthz answers while the process can schedule goroutines and serve this listener. It
// deliberately does not look at the upstream or the drain: a liveness probe that failed
// for those would get the sidecar restarted in the middle of a drain or an app outage.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	plain(w, http.StatusOK, "alive")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if reason := s.notReady(); reason != "" {
		plain(w, http.StatusServiceUnavailable, reason)
		return
	}
	plain(w, http.StatusOK, "ready")
}

// notReady is why the process should not get traffic, in one line, or "" when it should.
func (s *Server) notReady() string {
	st := s.opts.Drainer.Stats()
	healthy, reason := true, ""
	if h := s.opts.Health; h != nil && !h.Healthy() {
		healthy, reason = false, h.Reason()
	}
	switch {
	case st.Phase == drain.PhaseStarting && !healthy:
		return "starting: " + reason
	case st.Phase == drain.PhaseStarting:
		return "starting"
	case st.Phase != drain.PhaseReady && !st.ReadinessHeld: // held: drain.readiness_fail_delay
		return st.Phase.String()
	}
	if a := s.opts.App; a != nil {
		if reason := a.NotServing(); reason != "" {
			return reason
		}
	}
	if !healthy {
		return "upstream unhealthy: " + reason
	}
	return ""
}

// drain serves POST /drain. With ?hold=true (what `drainproxy drain` sends, from a native
// sidecar's preStop hook) the process does not exit when the drain is over: it serves
// nothing, says 503 on /readyz and keeps this listener up until its own SIGTERM, which
// kubelet sends a native sidecar only after the app's containers have exited.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	hold := false
	if v := r.URL.Query().Get("hold"); v != "" {
		var err error
		if hold, err = strconv.ParseBool(v); err != nil {
			plain(w, http.StatusBadRequest, fmt.Sprintf("hold=%q: want true or false", v))
			return
		}
	}
	holder, canHold := s.opts.Drainer.(Holder)
	if hold && !canHold {
		plain(w, http.StatusNotImplemented, "this drainer cannot hold after the drain")
		return
	}
	st := s.opts.Drainer.Stats()
	reason := "admin POST /drain"
	if hold {
		reason = "admin POST /drain?hold=true"
	}
	switch {
	case st.Phase >= drain.PhaseDraining && hold:
		holder.DrainAndHold(reason) // the drain under way holds after it, if it is not over
		plain(w, http.StatusAccepted, "already "+st.Phase.String()+"; holding after the drain until SIGTERM")
		return
	case st.Phase >= drain.PhaseDraining:
		plain(w, http.StatusAccepted, "already "+st.Phase.String())
		return
	}
	s.log.Info("drain requested on the admin listener", "client", r.RemoteAddr, "hold", hold)
	if hold {
		holder.DrainAndHold(reason)
		plain(w, http.StatusAccepted, "draining; holding after the drain until SIGTERM")
		return
	}
	s.opts.Drainer.Drain(reason)
	plain(w, http.StatusAccepted, "draining")
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	if st := s.opts.Drainer.Stats(); st.Phase >= drain.PhaseDraining {
		plain(w, http.StatusServiceUnavailable, "not restarting: "+st.Phase.String())
		return
	}
	if s.opts.Restarter == nil {
		plain(w, http.StatusConflict, "not restarting: no app is supervised (start drainproxy with -- COMMAND)")
		return
	}
	if err := s.opts.Restarter.Restart("admin POST /restart"); err != nil {
		plain(w, http.StatusConflict, "not restarting: "+err.Error())
		return
	}
	s.log.Info("app restart requested on the admin listener", "client", r.RemoteAddr)
	plain(w, http.StatusAccepted, "restarting the app")
}

// Status is the /status document.
type Status struct {
	Phase               string         `json:"phase"`
	Ready               bool           `json:"ready"`
	NotReadyReason      string         `json:"not_ready_reason,omitempty"`
	InflightRequests    int64          `json:"inflight_requests"`
	UpgradedConnections int64          `json:"upgraded_connections"`
	OpenConnections     int64          `json:"open_connections"`
	DrainedRequests     int64          `json:"drained_requests"`
	AbortedRequests     int64          `json:"aborted_requests"`
	UptimeSeconds       float64        `json:"uptime_seconds"`
	Started             time.Time      `json:"started"`
	Upstream            UpstreamStatus `json:"upstream"`
	Config              string         `json:"config"`
	Version             string         `json:"version"`
	PID                 int            `json:"pid"`

	// The drain's accounting so far (drain.Summary).
	CutBeforeHead  int64 `json:"cut_before_head"`
	CutMidResponse int64 `json:"cut_mid_response"`
	UpgradesClosed int64 `json:"upgrades_closed"`
	UpstreamFailed int64 `json:"upstream_failed"`
	// Unserved: connections the listeners closed without serving (drain.Summary.Unserved).
	Unserved int64 `json:"unserved_connections"`
	// Drain is where the drain is; absent before it begins.
	Drain *drain.DrainClock `json:"drain,omitempty"`
	// Inflight is what is in flight now, oldest first (absent if the drainer cannot list it).
	Inflight *drain.Inflight `json:"inflight,omitempty"`
}

// InflightLister is what /status needs to list what is in flight (drain.Drainer).
type InflightLister interface {
	Inflight(max int) drain.Inflight
}

// Caps on the in-flight list of /status: the default, and the most ?inflight= may ask.
const (
	DefaultInflightShown = 100
	MaxInflightShown     = 1000
)

// UpstreamStatus is the upstream part of Status.
type UpstreamStatus struct {
	URL     string `json:"url"`
	Checked bool   `json:"checked"` // false: no health checker, Healthy is assumed
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	shown := DefaultInflightShown
	if q := r.URL.Query().Get("inflight"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 0 {
			plain(w, http.StatusBadRequest, "bad request: ?inflight= takes a number of entries, 0 to "+strconv.Itoa(MaxInflightShown))
			return
		}
		shown = min(n, MaxInflightShown)
	}
	if !s.waitDrained(w, r) {
		return
	}
	st := s.opts.Drainer.Stats()
	notReady := s.notReady()
	doc := Status{
		Phase:               st.Phase.String(),
		Ready:               notReady == "",
		NotReadyReason:      notReady,
		InflightRequests:    st.InflightRequests,
		UpgradedConnections: st.Upgraded,
		OpenConnections:     st.OpenConnections,
		DrainedRequests:     st.Drained,
		AbortedRequests:     st.Aborted,
		UptimeSeconds:       time.Since(s.opts.Started).Seconds(),
		Started:             s.opts.Started.UTC(),
		Upstream:            UpstreamStatus{URL: s.opts.Upstream, Healthy: true},
		Config:              s.opts.ConfigSource,
		Version:             s.opts.Version,
		PID:                 os.Getpid(),
		CutBeforeHead:       st.CutBeforeHead,
		CutMidResponse:      st.CutMidResponse,
		UpgradesClosed:      st.UpgradesClosed,
		UpstreamFailed:      st.UpstreamFailed,
		Unserved:            st.Unserved,
		Drain:               st.Drain,
	}
	if l, ok := s.opts.Drainer.(InflightLister); ok {
		in := l.Inflight(shown)
		doc.Inflight = &in
	}
	if cur := s.opts.CurrentUpstream; cur != nil {
		doc.Upstream.URL = cur()
	}
	if h := s.opts.Health; h != nil {
		doc.Upstream.Checked = true
		doc.Upstream.Healthy = h.Healthy()
		doc.Upstream.Reason = h.Reason()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(doc)
}

func plain(w http.ResponseWriter, status int, line string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, line+"\n")
}

// Close is Stop with a short bound: a scrape in progress may finish, nothing more.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.Stop(ctx)
}
