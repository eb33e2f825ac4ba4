// Package tlsfront terminates TLS on drainproxy's public listeners: certificates from
// files (re-read on SIGHUP) or from an ACME CA through certmagic (HTTP-01 answered on the
// plain-HTTP listeners, TLS-ALPN-01 on the HTTPS ones), HTTP/2 and HTTP/1.1 by ALPN, the
// HTTP-to-HTTPS redirect and HSTS.
//
// HTTP/2 connections are handed to package h2serve, which drains them with the two-step
// GOAWAY from the start of the drain; their streams finish, the connections close, and
// the drain's connection count (the public server's ConnState) reaches zero.
package tlsfront

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/go-hclog"
	"github.com/mholt/acmez/v3"
	"golang.org/x/net/http2"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/h1serve"
	"github.com/drainproxy/drainproxy/h2serve"
	"github.com/drainproxy/drainproxy/listener"
)

// Options configures a Front.
type Options struct {
	// Listeners are the public listeners as configured; those with TLS set are served
	// over HTTPS, the others may redirect to them and answer HTTP-01 challenges.
	Listeners []config.Listener
	// HTTP2 serves the connections that negotiate h2; whoever makes it calls its Drain
	// when the drain starts (nil: the Front makes one, drained by the Drainer that Serve
	// is given).
	HTTP2 *h2serve.Server
	// Getenv looks up HOME and XDG_DATA_HOME for the default ACME storage (zero: os.Getenv).
	Getenv func(string) string
	// Logger receives the front's lines and certmagic's (zero: discard).
	Logger hclog.Logger
}

// Front is the TLS side of the public listeners. Build it with New, route each
// listener's handler through Handler and its socket through Wrap, then Start it.
type Front struct {
	log     hclog.Logger
	http2   *h2serve.Server
	sites   map[string]*site // by configured listener address
	order   []*site
	issuers []*certmagic.ACMEIssuer // answer HTTP-01 on the plain listeners

	httpAddr  net.Addr     // the first plain listener, bound
	httpsPort atomic.Int32 // the first HTTPS listener's bound port, for redirects

	cancel context.CancelFunc // ends certificate management
}

// site is one HTTPS listener.
type site struct {
	addr      string
	conf      config.TLS
	tlsConfig *tls.Config
	bound     net.Addr

	static *StaticCert // certificate files, or

	magic   *certmagic.Config // ACME
	cache   *certmagic.Cache
	issuer  *certmagic.ACMEIssuer
	storage string
	ready   *certsReady
}

// New loads static certificates and prepares ACME management for every TLS listener. It
// starts nothing: see Start.
func New(opts Options) (*Front, error) {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	f := &Front{log: opts.Logger, http2: opts.HTTP2, sites: make(map[string]*site), cancel: func() {}}
	if f.http2 == nil {
		return nil, errors.New("tlsfront: Options.HTTP2 is required (the server that drains the HTTPS listeners' HTTP/2 connections)")
	}
	for _, l := range opts.Listeners {
		if l.TLS == nil {
			continue
		}
		s := &site{addr: l.Address, conf: *l.TLS}
		s.tlsConfig = &tls.Config{
			MinVersion: l.TLS.MinVersion,
			NextProtos: []string{http2.NextProtoTLS, "http/1.1"},
		}
		if a := l.TLS.ACME; a != nil {
			if err := f.prepareACME(s, *a, opts.Getenv); err != nil {
				f.Close()
				return nil, fmt.Errorf("listener %s: %w", l.Address, err)
			}
			s.tlsConfig.GetCertificate = s.magic.GetCertificate
			// TLS-ALPN-01 validation connects with this protocol alone (RFC 8737).
			s.tlsConfig.NextProtos = append(s.tlsConfig.NextProtos, acmez.ACMETLS1Protocol)
		} else {
			st, err := LoadStaticCert(l.TLS.CertFile, l.TLS.KeyFile)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("listener %s: %w", l.Address, err)
			}
			s.static = st
			s.tlsConfig.GetCertificate = st.GetCertificate
		}
		f.sites[l.Address] = s
		f.order = append(f.order, s)
	}
	return f, nil
}

func (f *Front) prepareACME(s *site, a config.ACME, getenv func(string) string) error {
	storage := a.Storage
	if storage == "" {
		var err error
		if storage, err = DefaultStorage(getenv); err != nil {
			return err
		}
	}
	roots, err := trustedRoots(a.TrustedRoots)
	if err != nil {
		return err
	}
	zl := ZapLogger(f.log.Named("certmagic"))
	s.storage = storage
	s.ready = newCertsReady(a.Domains)
	var magic *certmagic.Config
	s.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zl,
	})
	magic = certmagic.New(s.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: storage},
		OnEvent: s.ready.onEvent,
		Logger:  zl,
	})
	s.issuer = certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:                      a.CA,
		Email:                   a.Email,
		Agreed:                  a.AgreeTerms,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    !slices.Contains(a.Challenges, config.ChallengeHTTP01),
		DisableTLSALPNChallenge: !slices.Contains(a.Challenges, config.ChallengeTLSALPN01),
		Logger:                  zl,
	})
	magic.Issuers = []certmagic.Issuer{s.issuer}
	s.magic = magic
	f.issuers = append(f.issuers, s.issuer)
	return nil
}

// DefaultStorage is where ACME accounts, keys and certificates go when acme.storage is
// "": /var/lib/drainproxy/certmagic for root, else $XDG_DATA_HOME/drainproxy/certmagic,
// else $HOME/.local/share/drainproxy/certmagic.
func DefaultStorage(getenv func(string) string) (string, error) {
	if os.Geteuid() == 0 {
		return "/var/lib/drainproxy/certmagic", nil
	}
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "drainproxy", "certmagic"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "drainproxy", "certmagic"), nil
	}
	return "", errors.New("no directory for ACME certificates: set listener.tls.acme.storage (or HOME or XDG_DATA_HOME)")
}

// trustedRoots is the system roots plus the PEM files given, or nil (the system roots)
// when none are.
func trustedRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read trusted root: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("trusted root %s holds no PEM certificate", f)
		}
	}
	return pool, nil
}

// Handler returns the handler for listener l around next (the proxy): next with HSTS on
// an HTTPS listener; on a plain one, behind the ACME HTTP-01 challenge responders, the
// HTTPS redirect when l asks for it (challenge paths excepted), else next.
func (f *Front) Handler(l config.Listener, next http.Handler) http.Handler {
	if s := f.sites[l.Address]; s != nil {
		return HSTS(s.conf.HSTS, next)
	}
	h := next
	if r := l.Redirect; r != nil {
		port := func() int { return int(f.httpsPort.Load()) }
		if r.Port != 0 {
			port = func() int { return r.Port }
		}
		h = RedirectHandler(r.Status, port, next) // challenges certmagic does not know go on to the app
	}
	for _, iss := range slices.Backward(f.issuers) {
		h = iss.HTTPChallengeHandler(h)
	}
	return h
}

// Wrap returns the listener that srv must serve for l: ln itself for a plain listener;
// for an HTTPS one, ln behind TLS, with srv set up to hand HTTP/2 connections to the
// h2serve.Server of Options.HTTP2 (whose owner drains it). Call it for every listener
// before Start.
func (f *Front) Wrap(l config.Listener, ln *listener.Listener, srv *http.Server) (net.Listener, error) {
	return f.wrap(l, ln, func() { f.http2.Configure(srv, false) })
}

// WrapH1 is Wrap for a server of package h1serve.
func (f *Front) WrapH1(l config.Listener, ln *listener.Listener, srv *h1serve.Server) (net.Listener, error) {
	return f.wrap(l, ln, func() { f.http2.ConfigureH1(srv, false) })
}

// wrap is Wrap, with configureH2 setting the server up to hand HTTP/2 to h2serve.
func (f *Front) wrap(l config.Listener, ln *listener.Listener, configureH2 func()) (net.Listener, error) {
	s := f.sites[l.Address]
	if s == nil {
		if f.httpAddr == nil {
			f.httpAddr = ln.Addr()
		}
		return ln, nil
	}
	s.bound = ln.Addr()
	if f.httpsPort.Load() == 0 {
		f.httpsPort.Store(int32(portOf(ln.Addr())))
	}
	configureH2()
	f.log.Info("serving HTTPS", "address", ln.Addr().String(), "certificate", s.source(),
		"min_version", tls.VersionName(s.conf.MinVersion), "hsts", s.conf.HSTS)
	return &Listener{Listener: tls.NewListener(ln, s.tlsConfig), tcp: ln}, nil
}

func (s *site) source() string {
	if s.static != nil {
		return "file " + s.conf.CertFile
	}
	return "acme " + strings.Join(s.conf.ACME.Domains, ",")
}

// Start begins certificate management for the ACME listeners: certificates in storage
// are loaded, missing ones are obtained in the background, and all are renewed until
// Close. Challenges are answered on drainproxy's own listeners, so call Start after
// Wrap, once every listener is bound.
func (f *Front) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	for _, s := range f.order {
		if s.magic == nil {
			continue
		}
		a := s.conf.ACME
		// Tell certmagic that our listeners answer the challenges, so that it does not
		// try to open its own on ports 80 and 443.
		if host, port, err := net.SplitHostPort(s.bound.String()); err == nil {
			s.issuer.ListenHost = host
			s.issuer.AltTLSALPNPort, _ = strconv.Atoi(port)
		}
		challenges := []string{}
		if !s.issuer.DisableHTTPChallenge {
			if f.httpAddr == nil {
				s.issuer.DisableHTTPChallenge = true
				f.log.Info("no plain-HTTP listener: the HTTP-01 challenge is off, TLS-ALPN-01 is used", "address", s.bound.String())
			} else {
				s.issuer.AltHTTPPort = portOf(f.httpAddr)
				challenges = append(challenges, config.ChallengeHTTP01+" on "+f.httpAddr.String())
			}
		}
		if !s.issuer.DisableTLSALPNChallenge {
			challenges = append(challenges, config.ChallengeTLSALPN01+" on "+s.bound.String())
		}
		f.log.Info("managing certificates", "domains", strings.Join(a.Domains, ","), "ca", a.CA,
			"storage", s.storage, "challenges", strings.Join(challenges, ", "))
		if err := s.magic.ManageAsync(ctx, a.Domains); err != nil {
			return fmt.Errorf("manage certificates for %s: %w", strings.Join(a.Domains, ", "), err)
		}
	}
	return nil
}

// Gate returns a readiness gate that runs next (when not nil) and then waits until
// every ACME domain has a certificate in memory: until then HTTPS handshakes for it
// fail, so the process should not be ready. A drain request (ctx) ends the wait.
func (f *Front) Gate(next func(context.Context) error) func(context.Context) error {
	var waits []*site
	for _, s := range f.order {
		if s.ready != nil {
			waits = append(waits, s)
		}
	}
	if len(waits) == 0 {
		return next
	}
	return func(ctx context.Context) error {
		if next != nil {
			if err := next(ctx); err != nil {
				return err
			}
		}
		for _, s := range waits {
			select {
			case <-s.ready.done:
				continue
			default:
			}
			f.log.Info("waiting for certificates", "domains", strings.Join(s.ready.pending(), ","))
			select {
			case <-s.ready.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f.log.Info("certificates ready")
		return nil
	}
}

// ReloadStatic reads every certificate file pair again. A pair that fails to load is
// logged and the one served so far stays; the error says which.
func (f *Front) ReloadStatic() error {
	_, err := f.ReloadStaticChanged()
	return err
}

// ReloadStaticChanged is ReloadStatic that also returns the addresses of the listeners
// whose certificate is now another one (the files held a new certificate).
func (f *Front) ReloadStaticChanged() (changed []string, err error) {
	var errs []error
	for _, s := range f.order {
		if s.static == nil {
			continue
		}
		var before []byte
		if leaf := s.static.Leaf(); leaf != nil {
			before = leaf.Raw
		}
		if err := s.static.Reload(); err != nil {
			f.log.Error("cannot reload the certificate; still serving the previous one", "address", s.addr, "error", err.Error())
			errs = append(errs, err)
			continue
		}
		leaf := s.static.Leaf()
		f.log.Info("certificate reloaded", "address", s.addr, "cert_file", s.conf.CertFile,
			"subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		if !bytes.Equal(before, leaf.Raw) {
			changed = append(changed, s.addr)
		}
	}
	return changed, errors.Join(errs...)
}

// Close ends certificate management (renewals, background obtains).
func (f *Front) Close() {
	f.cancel()
	for _, s := range f.order {
		if s.cache != nil {
			s.cache.Stop()
		}
	}
}

// Listener is an HTTPS listener that the drain can stop without resetting connections in
// the accept queue: the TLS listener for Accept, the TCP one underneath for
// StopAccepting. http.Server does each connection's TLS handshake itself.
type Listener struct {
	net.Listener
	tcp *listener.Listener
}

// StopAccepting implements drain.StopAccepter.
func (l *Listener) StopAccepting(ctx context.Context) (int, error) {
	return l.tcp.StopAccepting(ctx)
}

// Remove implements drain.Remover.
func (l *Listener) Remove(ctx context.Context) (int, error) { return l.tcp.Remove(ctx) }

func portOf(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	_, p, _ := net.SplitHostPort(a.String())
	n, _ := strconv.Atoi(p)
	return n
}

// certsReady learns from certmagic's events when every domain has a certificate cached.
type certsReady struct {
	mu      sync.Mutex
	missing map[string]bool
	done    chan struct{}
}

func newCertsReady(domains []string) *certsReady {
	r := &certsReady{missing: make(map[string]bool), done: make(chan struct{})}
	for _, d := range domains {
		r.missing[strings.ToLower(d)] = true
	}
	return r
}

// onEvent is certmagic.Config.OnEvent.
func (r *certsReady) onEvent(_ context.Context, event string, data map[string]any) error {
	if event != "cached_managed_cert" {
		return nil
	}
	sans, _ := data["sans"].([]string)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.missing) == 0 {
		return nil
	}
	for _, n := range sans {
		delete(r.missing, strings.ToLower(n))
	}
	if len(r.missing) == 0 {
		close(r.done)
	}
	return nil
}

func (r *certsReady) pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.missing))
}
