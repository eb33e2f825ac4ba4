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
	"net/netip"
	"net/url"
	"time"
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

	// Listeners are the public addresses. Never empty after Parse.
	Listeners []Listener
	Upstream  Upstream
	Proxy     Proxy
	Drain     Drain
	Admin     Admin
	Log       Log
	Limits    Limits
}

// Listener is one public address to accept client connections on.
type Listener struct {
	// Address is host:port as net.Listen takes it; port 0 picks a free port.
	Address string
}

// Upstream is the app behind the proxy.
type Upstream struct {
	// URL is where requests go. Its scheme is http, https or unix; for unix, URL.Path is
	// the socket's path (unix:///run/app.sock). Never nil after Parse.
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
	// Grace is how long in-flight requests and upgraded connections may take after the
	// listeners close; what is left then is closed by force.
	Grace time.Duration
	// IdleClose is how long a keep-alive connection may sit idle during a drain before it
	// is closed. Closing sooner races a client that is about to send its next request.
	IdleClose time.Duration
	// FlushTimeout bounds the wait for background workers (access log, metrics) at exit.
	FlushTimeout time.Duration
}

// Admin is the listener for /healthz, /readyz, /metrics and POST /drain.
type Admin struct {
	// Address is host:port; "" means there is no admin listener ("off" in the file or
	// the -admin flag).
	Address string
}

// Log is where logs go and how they look.
type Log struct {
	// Level is one of trace, debug, info, warn, error.
	Level string
	// Format is auto (text on a terminal, json otherwise), text or json.
	Format string
	// AccessLog is "stdout", "stderr", "off" or a file path.
	AccessLog string
}

// Limits protect the proxy from clients. A zero that means "none" is said so per field.
type Limits struct {
	// MaxConnections caps concurrent client connections per listener; 0 is unlimited.
	MaxConnections int
	// MaxHeaderBytes caps a request's header size (http.Server.MaxHeaderBytes).
	MaxHeaderBytes int
	// MaxRequestBodyBytes caps a request body; above it the answer is 413. 0 is unlimited.
	MaxRequestBodyBytes int64
	// ReadHeaderTimeout bounds reading request headers (the slow-loris bound).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request; 0 is none, so long uploads work.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a whole response; 0 is none, so long streamed
	// responses work.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive client connection may wait for its next request.
	IdleTimeout time.Duration
}

// Default returns a Config holding every default. Upstream.URL is nil, because there is
// no sensible default upstream, and Source is empty.
func Default() *Config {
	return &Config{
		Listeners: []Listener{{Address: "127.0.0.1:8080"}},
		Upstream: Upstream{
			DialTimeout:           5 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConns:             256,
			IdleConnTimeout:       90 * time.Second,
		},
		Proxy: Proxy{HostHeader: HostHeaderClient},
		Drain: Drain{
			Delay:        0,
			Grace:        30 * time.Second,
			IdleClose:    500 * time.Millisecond,
			FlushTimeout: 5 * time.Second,
		},
		Admin: Admin{Address: "127.0.0.1:9901"},
		Log:   Log{Level: "info", Format: "auto", AccessLog: "stdout"},
		Limits: Limits{
			MaxConnections:      10000,
			MaxHeaderBytes:      1 << 20,
			MaxRequestBodyBytes: 0,
			ReadHeaderTimeout:   10 * time.Second,
			ReadTimeout:         0,
			WriteTimeout:        0,
			IdleTimeout:         120 * time.Second,
		},
	}
}
