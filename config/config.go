// Package config turns drainproxy's command line and its optional HCL file into one
// validated Config.
//
// The order is fixed: defaults, then the file given with -config, then flags. Every value
// is validated where it enters, so an error can say where it came from: a file value as
// "FILE:LINE:COL: block.attribute: what is wrong; what to write instead", a flag value by
// the flag's name. The documented example with every default is config.hcl at the
// repository root; Default and that file must agree, and a test holds them to it.
package config

import (
	"crypto/tls"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/drainproxy/drainproxy/supervise"
)

// Config is everything drainproxy needs to run. Parse returns it validated; Default
// returns it with every default and no upstream.
type Config struct {
	// Source is the config file's path as given to -config, or "flags" when there was none.
	Source string
	// ShowVersion is -version. When set, Parse loads nothing and validates nothing, so
	// printing the version works whatever state the config is in.
	ShowVersion bool
	// CheckOnly is -check: the caller validates and exits, like nginx -t.
	CheckOnly bool
	// Renamed lists the settings given by an old name (config.Renamed), for the caller
	// to warn about: they still load, as their new name.
	Renamed []RenamedSetting

	// Listeners are the public addresses. Never empty after Parse.
	Listeners []Listener
	Upstream  Upstream
	Proxy     Proxy
	Drain     Drain
	Admin     Admin
	// HealthCheck is how the upstream is checked; readiness follows it.
	HealthCheck HealthCheck
	// App is how the app given as Upstream.Command is supervised.
	App    App
	Log    Log
	Limits Limits
	// Runtime tunes Go's runtime in this process.
	Runtime Runtime
	// Server is how the public listeners serve HTTP/1.
	Server Server
}

// Runtime tunes Go's runtime; GOGC and GOMEMLIMIT in the environment win over it.
type Runtime struct {
	// GCHeapFloorBytes lets the heap grow to this size before Go's garbage collector runs,
	// however little is alive, while the process allocates fast (package gcfloor); 0 leaves
	// Go's pacing alone. GOGC set in the environment turns it off.
	GCHeapFloorBytes int64
}

// RenamedSetting is a setting given by its old name.
type RenamedSetting struct {
	Old, New string // "limits.read_timeout", "limits.request_read_timeout"
	// Where is the old name's place: FILE:LINE:COL, or the environment variable.
	Where string
}

// Server chooses the HTTP/1 server loop of the public listeners.
type Server struct {
	// Engine is EngineH1serve (drainproxy's own connection loop, package h1serve) or
	// EngineNetHTTP (Go's net/http Server). Both serve the same handler and drain the
	// same way; h1serve costs less per request and holds no buffers while a connection
	// is idle (docs/performance.md).
	Engine string
}

// The values of Server.Engine.
const (
	EngineH1serve = "h1serve"
	EngineNetHTTP = "net/http"
)

func serverEngines() []string { return []string{EngineH1serve, EngineNetHTTP} }

// Listener is one public address to accept client connections on.
type Listener struct {
	// Address is host:port as net.Listen takes it; port 0 picks a free port.
	Address string
	// TLS, when not nil, makes this an HTTPS listener (package tlsfront).
	TLS *TLS
	// Redirect, when not nil, makes this plain-HTTP listener redirect every request to
	// HTTPS instead of proxying it; ACME HTTP-01 challenges are still answered.
	Redirect *Redirect
	// DisableH2C turns off HTTP/2 with prior knowledge (h2c) on a plain-HTTP listener
	// ("h2c = false"); by default such a listener accepts it beside HTTP/1.1, so that gRPC
	// clients can connect without TLS.
	DisableH2C bool
}

// TLS is how an HTTPS listener gets its certificate: from files (CertFile and KeyFile,
// re-read on SIGHUP) or from an ACME CA (ACME). Exactly one of the two is set.
type TLS struct {
	CertFile string
	KeyFile  string
	ACME     *ACME
	// MinVersion is the oldest TLS version accepted (tls.VersionTLS12 or VersionTLS13).
	MinVersion uint16
	// HSTS, when not empty, is sent as Strict-Transport-Security on every HTTPS response.
	HSTS string
}

// ACME is automatic certificate management (certmagic) for an HTTPS listener.
type ACME struct {
	// Domains are the names to obtain certificates for; never empty.
	Domains []string
	// Email is the ACME account's contact; "" registers an account without one.
	Email string
	// CA is the ACME directory URL; Staging replaces the default with Let's Encrypt's
	// staging directory.
	CA      string
	Staging bool
	// TrustedRoots are PEM files of extra roots to trust when talking to the CA (a
	// private ACME CA); empty trusts the system roots only.
	TrustedRoots []string
	// Storage is the directory for accounts, keys, certificates and locks; replicas that
	// share it share certificates. "" is the default (tlsfront.DefaultStorage).
	Storage string
	// AgreeTerms is the operator's agreement to the CA's terms; Parse requires true.
	AgreeTerms bool
	// Challenges are the ACME challenge types allowed: ChallengeHTTP01, ChallengeTLSALPN01.
	Challenges []string
}

// ACME challenge types for ACME.Challenges.
const (
	ChallengeHTTP01    = "http-01"     // answered on a plain-HTTP listener (port 80 for public CAs)
	ChallengeTLSALPN01 = "tls-alpn-01" // answered on the HTTPS listener itself (port 443)
)

// Redirect is how a plain-HTTP listener sends clients to HTTPS.
type Redirect struct {
	// Status is 301, 302, 307 or 308.
	Status int
	// Port is the HTTPS port written in the Location; 0 is the port of the first TLS
	// listener. Port 443 is left out of the URL.
	Port int
}

// Upstream is the app behind the proxy.
type Upstream struct {
	// URL is where requests go. Its scheme is http, https or unix; for unix, URL.Path is
	// the socket's path (unix:///run/app.sock). h2c and unix+h2c are the same two with
	// HTTP/2 spoken to the app in clear text (prior knowledge), as gRPC servers want.
	// Never nil after Parse.
	URL *url.URL
	// Command, when not empty, is the app to start and supervise (the args after "--",
	// or command = [...] in the file). Nil when not given.
	Command []string
	// DialTimeout bounds connecting to the upstream.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the upstream's response headers once the
	// request is written; exceeding it answers 504.
	ResponseHeaderTimeout time.Duration
	// IdleConns is the size of the keep-alive pool to the upstream (at least 1). Go's
	// default of 2 makes a busy proxy open and close connections constantly.
	IdleConns int
	// IdleConnTimeout is how long an unused pooled upstream connection is kept.
	IdleConnTimeout time.Duration
	// ReadTimeout is the longest the upstream may go without sending a byte of a
	// response body once its headers arrived (nginx's proxy_read_timeout); the client's
	// connection is then closed. 0 is none.
	ReadTimeout time.Duration
	// SendTimeout is the longest the upstream may go without taking a byte of a request
	// (nginx's proxy_send_timeout); 504 then. 0 is none.
	SendTimeout time.Duration
	// KeepAlive pools upstream connections and reuses them (true by default). False gives
	// every exchange a connection of its own: a stray response from a buggy app then
	// never reaches another client, at the cost of a connect per request.
	KeepAlive bool
	// MaxResponseHeaderBytes caps an upstream response head (status line and header
	// fields, 1xx heads included); a longer one answers 502 and logs one line.
	MaxResponseHeaderBytes int64
	// MaxRequests caps the requests in flight to the upstream, every client and protocol
	// together (Envoy's circuit breaker max_requests); above it a request waits up to
	// QueueTimeout for a slot, then is answered 503 with Retry-After (gRPC: UNAVAILABLE).
	MaxRequests  int
	QueueTimeout time.Duration
}

// Host header policies for Proxy.HostHeader.
const (
	HostHeaderClient   = "client"   // pass the client's Host through
	HostHeaderUpstream = "upstream" // send the upstream URL's host
)

// Proxy is how requests are rewritten on their way upstream.
type Proxy struct {
	// HostHeader is HostHeaderClient or HostHeaderUpstream.
	HostHeader string
	// TrustedProxies are the peers whose X-Forwarded-* headers are believed. Empty means
	// nobody's are: the headers are replaced with what this proxy saw. A bare address in
	// the file becomes a /32 or /128 prefix. Every prefix is canonical (no host bits set).
	TrustedProxies []netip.Prefix
}

// Drain is the timing of the graceful drain; see DESIGN.md for the sequence.
type Drain struct {
	// Delay is how long to keep serving after the signal, with /readyz answering 503, so
	// load balancers deregister us before the listeners close. 0 closes at once; about 5s
	// suits Kubernetes.
	Delay time.Duration
	// ReadinessFailDelay keeps /readyz at 200 for this long after the signal (at most
	// Delay), while responses already carry "Connection: close". 0, the default, fails
	// readiness at once. For kube-proxy's fallback to terminating-but-serving endpoints
	// (KEP-1669) under externalTrafficPolicy: Local, where failing at once drops the
	// traffic a node whose last endpoint this is still receives.
	ReadinessFailDelay time.Duration
	// Grace is how long in-flight requests and upgraded connections may take after the
	// listeners close; what is left then is closed by force.
	Grace time.Duration
	// IdleClose is how long a keep-alive connection may sit idle during a drain before it
	// is closed, counted from the later of its last response and the signal and stretched
	// by the connection's round trip. Closing sooner races a client that is about to send
	// its next request.
	IdleClose time.Duration
	// HandshakeWait bounds how long, once new connections are refused, the listeners stay
	// open for handshakes already under way (SYN-ACK sent, the client's final ACK, usually
	// carrying its request, one round trip away). The wait ends when none is left.
	HandshakeWait time.Duration
	// FlushTimeout bounds the wait for background workers (access log, metrics) at exit.
	FlushTimeout time.Duration

	// DelayAuto is delay = "auto": the delay ends once no new connection has arrived for
	// Quiet, but not before DelayMin nor after DelayMax; Delay is then 0.
	DelayAuto          bool
	Quiet              time.Duration
	DelayMin, DelayMax time.Duration
	// ProgressInterval is how often the wait step logs what is left; 0 never.
	ProgressInterval time.Duration
	// TerminationLog is the file the drain's summary line is written to at exit ("" none);
	// TerminationLogAuto: /dev/termination-log where it exists (Kubernetes).
	TerminationLog string
}

// TerminationLogAuto is drain.termination_log's default: Kubernetes' /dev/termination-log,
// used only where it exists.
const TerminationLogAuto = "auto"

// DefaultTerminationLog is the file TerminationLogAuto writes to where it exists.
const DefaultTerminationLog = "/dev/termination-log"

// Admin is the listener for /healthz, /readyz, /metrics and POST /drain.
type Admin struct {
	// Address is host:port; "" means there is no admin listener ("off" in the file or
	// the -admin flag).
	Address string
	// Token, when not empty, is the bearer token that POST /drain, /metrics and /status
	// require (token in the file, or read from token_file).
	Token string
	// TokenFile is the file Token was read from, or "".
	TokenFile string
	// AllowedHosts are the extra names (lower case, no port) the admin endpoints answer
	// as Host, besides loopback names and addresses and the address a request came in
	// on: e.g. the name a Prometheus scrapes this pod by. Probes answer any Host.
	AllowedHosts []string
}

// HealthCheck is the active check of the upstream. Proxied requests that cannot reach the
// upstream count as failed checks too.
type HealthCheck struct {
	// Path is requested with GET; a status from 200 to 399 passes. "" checks that a
	// connection can be opened, nothing more.
	Path string
	// Interval is the time between checks (more than 0).
	Interval time.Duration
	// Timeout bounds one check (more than 0).
	Timeout time.Duration
	// HealthyThreshold is how many passed checks in a row make an unhealthy upstream
	// healthy again (at least 1).
	HealthyThreshold int
	// UnhealthyThreshold is how many failures in a row make a healthy upstream unhealthy
	// (at least 1).
	UnhealthyThreshold int
	// GRPC makes the check the gRPC health protocol: grpc.health.v1.Health/Check for
	// GRPCService ("" asks about the whole server) over HTTP/2, passing on SERVING.
	// Path must then be "".
	GRPC        bool
	GRPCService string
}

// App is how drainproxy runs the app it starts (Upstream.Command); unused without one.
type App struct {
	// StopSignal asks the app to stop once the proxy has drained; it goes to the app's
	// process group.
	StopSignal syscall.Signal
	// StopTimeout is how long the app may take to exit after StopSignal before SIGKILL.
	StopTimeout time.Duration
	// StartTimeout is how long the app may take to answer at start-up before drainproxy
	// gives up, stops it and exits 1.
	StartTimeout time.Duration
	// Restart is the policy when the app exits by itself: never, on-failure or always.
	Restart supervise.Restart
	// MaxRestarts is how many restarts are allowed within RestartWindow before drainproxy
	// gives up, drains and exits 1 (at least 1).
	MaxRestarts int
	// RestartWindow is the window MaxRestarts counts in (more than 0).
	RestartWindow time.Duration
	// OutputPrefix is written before each line of the app's output; "" passes the output
	// through untouched.
	OutputPrefix string
	// ForwardSignals are passed on to the app when drainproxy receives them.
	ForwardSignals []syscall.Signal
}

// Log is where logs go and how they look.
type Log struct {
	// Level is one of trace, debug, info, warn, error.
	Level string
	// Format is auto (text on a terminal, json otherwise), text or json.
	Format string
	// AccessLog is "stdout", "stderr", "off" or a file path.
	AccessLog string
	// AccessLogFormat is json (every field), common or combined (Apache/nginx formats).
	AccessLogFormat string
	// AccessLogBuffer is how many access log lines may wait for the writer (at least 1).
	AccessLogBuffer int
	// AccessLogWhenFull is what a request does when that buffer is full: block (wait for
	// room, lose nothing) or drop (drop the line and count it).
	AccessLogWhenFull string
}

// Limits protect the proxy from clients. A zero that means "none" is said so per field.
type Limits struct {
	// MaxConnections caps concurrent client connections per listener; 0 is unlimited.
	// When full, the keep-alive connection idle longest makes room for a new client.
	MaxConnections int
	// MaxHeaderBytes caps a request's header list (http.Server.MaxHeaderBytes): an HTTP/1
	// head's bytes, HTTP/2's decoded list (which bounds HPACK amplification); 431 above.
	MaxHeaderBytes int
	// MaxRequestBodyBytes caps a request body; above it the answer is 413. 0 is unlimited.
	MaxRequestBodyBytes int64
	// ReadHeaderTimeout bounds reading request headers (the slow-loris bound).
	ReadHeaderTimeout time.Duration
	// RequestReadTimeout bounds reading a whole request, head and body, from its first
	// byte (http.Server.ReadTimeout): a deadline, not a progress timeout; 0 is none, so
	// long uploads work (ClientBodyTimeout bounds a client that stops sending).
	RequestReadTimeout time.Duration
	// WriteTimeout bounds writing a whole response; 0 is none, so long streamed
	// responses work.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive client connection may wait for its next request.
	IdleTimeout time.Duration
	// SendTimeout is the longest a client may go without taking a byte of its response
	// (nginx's send_timeout); its connection is then closed. 0 is none.
	SendTimeout time.Duration
	// ClientBodyTimeout is the longest a client may go without sending a byte of its
	// request body (nginx's client_body_timeout); 408 then. 0 is none.
	ClientBodyTimeout time.Duration
	// UpgradeIdleTimeout closes an upgraded connection (WebSocket) on which nothing moved
	// either way for this long (HAProxy's timeout tunnel). 0 is none.
	UpgradeIdleTimeout time.Duration
	// H2MaxConcurrentStreams is the HTTP/2 stream limit per client connection announced
	// in SETTINGS; a client that opens more has them refused.
	H2MaxConcurrentStreams int
	// H2WindowTimeout resets an HTTP/2 stream whose client gives its response no send
	// window for this long (SETTINGS_INITIAL_WINDOW_SIZE=0); 0 leaves it to SendTimeout.
	H2WindowTimeout time.Duration
}

// Default returns a Config holding every default. Upstream.URL is nil, because there is
// no sensible default upstream, and Source is empty.
func Default() *Config {
	return &Config{
		Listeners: []Listener{{Address: "127.0.0.1:8080"}},
		Upstream: Upstream{
			DialTimeout:           5 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConns:             1024,
			IdleConnTimeout:       90 * time.Second,
			ReadTimeout:           60 * time.Second,
			SendTimeout:           60 * time.Second,
			KeepAlive:             true,
			// Above Envoy's 60 KiB and 8x nginx's 8 KiB buffer; see proxy.DefaultMaxResponseHeaderBytes.
			MaxResponseHeaderBytes: 64 << 10,
			MaxRequests:            1024,
			QueueTimeout:           time.Second,
		},
		Proxy: Proxy{HostHeader: HostHeaderClient},
		Drain: Drain{
			Delay:         0,
			Grace:         30 * time.Second,
			IdleClose:     time.Second,
			HandshakeWait: 2 * time.Second,
			FlushTimeout:  5 * time.Second,
			// Issue 25: drain.delay = "auto" and what the drain tells operators.
			Quiet:            time.Second,
			DelayMin:         0,
			DelayMax:         10 * time.Second,
			ProgressInterval: 5 * time.Second,
			TerminationLog:   TerminationLogAuto,
		},
		Admin: Admin{Address: "127.0.0.1:9901"},
		HealthCheck: HealthCheck{
			Path:               "",
			Interval:           5 * time.Second,
			Timeout:            2 * time.Second,
			HealthyThreshold:   2,
			UnhealthyThreshold: 3,
		},
		App: App{
			StopSignal:     syscall.SIGTERM,
			StopTimeout:    10 * time.Second,
			StartTimeout:   30 * time.Second,
			Restart:        supervise.RestartNever,
			MaxRestarts:    5,
			RestartWindow:  time.Minute,
			OutputPrefix:   "",
			ForwardSignals: nil,
		},
		Log: Log{
			Level: "info", Format: "auto",
			AccessLog: "stdout", AccessLogFormat: "json", AccessLogBuffer: 4096, AccessLogWhenFull: "block",
		},
		Server: Server{Engine: EngineH1serve},
		Limits: Limits{
			MaxConnections:         10000,
			MaxHeaderBytes:         64 << 10, // the decoded header list, HTTP/1 and HTTP/2 (HPACK amplification); Envoy 60 KiB
			MaxRequestBodyBytes:    0,
			ReadHeaderTimeout:      10 * time.Second,
			RequestReadTimeout:     0,
			WriteTimeout:           0,
			IdleTimeout:            120 * time.Second,
			SendTimeout:            60 * time.Second,
			ClientBodyTimeout:      60 * time.Second,
			UpgradeIdleTimeout:     time.Hour,
			H2MaxConcurrentStreams: 100,
			H2WindowTimeout:        10 * time.Second,
		},
		Runtime: Runtime{GCHeapFloorBytes: 32 << 20},
	}
}

// Let's Encrypt's ACME directories, for ACME.CA.
const (
	LetsEncryptCA        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStagingCA = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// DefaultTLS holds the defaults of a listener's tls block, which Default cannot show
// since no listener has one by default.
func DefaultTLS() TLS { return TLS{MinVersion: tls.VersionTLS12} }

// DefaultACME holds the defaults of a tls block's acme block.
func DefaultACME() ACME {
	return ACME{CA: LetsEncryptCA, Challenges: []string{ChallengeHTTP01, ChallengeTLSALPN01}}
}

// DefaultRedirect holds the defaults of a listener's redirect settings.
func DefaultRedirect() Redirect { return Redirect{Status: http.StatusPermanentRedirect} }
