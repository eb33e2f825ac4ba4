package instance

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/drainproxy/drainproxy/internal/swap"
	"github.com/drainproxy/drainproxy/proxy"
	"github.com/drainproxy/drainproxy/supervise"
)

// proxySwitch is the public handler's way to the proxy. A reload that changes how requests
// are proxied builds a new proxy.Proxy and swaps it in: requests that start from then on
// use it, requests in flight finish on the one they started on, whose idle upstream
// connections are closed once the last of them is done.
//
// A retired proxy still sends its requests in flight to the app instance it was serving,
// so an app restart (switchUpstream) waits for them too, not only for those of the
// current proxy: retired keeps every retired proxy that still has requests in flight.
type proxySwitch struct {
	cur     atomic.Pointer[proxyGen]
	mu      sync.Mutex  // orders swap with switchUpstream; guards retired
	retired []*proxyGen // swapped out, perhaps still busy
}

// proxyGen is one proxy and the requests on it (package swap); once a reload retired it
// and its last request ended, its idle keep-alive connections are closed.
type proxyGen struct {
	p   *proxy.Proxy
	gen *swap.Gen
}

func newProxyGen(p *proxy.Proxy) *proxyGen {
	return &proxyGen{p: p, gen: swap.New(p.CloseIdleConnections)}
}

func newProxySwitch(p *proxy.Proxy) *proxySwitch {
	s := &proxySwitch{}
	s.cur.Store(newProxyGen(p))
	return s
}

// current is the proxy new requests go to.
func (s *proxySwitch) current() *proxy.Proxy { return s.cur.Load().p }

// upstream is the current proxy's upstream address, which follows restarts and reloads.
func (s *proxySwitch) upstream() string { return s.current().Upstream() }

func (s *proxySwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := s.acquire()
	defer g.gen.Release()
	g.p.ServeHTTP(w, r)
}

// acquire counts a request on the current proxy and returns it. A swap between the load
// and the count makes it look again; the proxy that replaced it is stored by then.
func (s *proxySwitch) acquire() *proxyGen {
	for {
		if g := s.cur.Load(); g.gen.Acquire() {
			return g
		}
	}
}

// switchUpstream moves the current proxy to u: a supervised app's zero-downtime restart.
// What it returns waits for the requests in flight to the previous upstream, through the
// current proxy and through every proxy a reload retired that still has some.
func (s *proxySwitch) switchUpstream(u *url.URL) (supervise.Retired, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.current().Switch(u)
	if err != nil {
		return nil, err
	}
	s.pruneRetired()
	return &retiredUpstream{backend: old, gens: slices.Clone(s.retired)}, nil
}

// pruneRetired forgets the retired proxies with nothing in flight. s.mu must be held.
func (s *proxySwitch) pruneRetired() {
	s.retired = slices.DeleteFunc(s.retired, func(g *proxyGen) bool { return g.gen.IsIdle() })
}

// swap sends every request from now on to p. builtFor, when not empty, is the upstream
// p was built for: if a restart moved the current proxy meanwhile, p follows it.
func (s *proxySwitch) swap(p *proxy.Proxy, builtFor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.current().Upstream(); builtFor != "" && now != builtFor {
		if u, err := url.Parse(now); err == nil {
			if unused, err := p.Switch(u); err == nil {
				unused.Close() // built a moment ago, never served
			}
		}
	}
	old := s.cur.Swap(newProxyGen(p))
	old.gen.Retire()
	s.pruneRetired()
	if !old.gen.IsIdle() {
		s.retired = append(s.retired, old)
	}
}

// retiredUpstream is the app instance a restart replaced, as the proxies reach it: the
// current proxy's previous backend, and the proxies a reload retired while requests were
// still in flight on them (those go to the previous instance, or to an older one that is
// already stopped). It implements supervise.Retired.
type retiredUpstream struct {
	backend *proxy.Backend
	gens    []*proxyGen
}

// Wait waits for the requests through the current proxy, then for those on each retired
// proxy; each wakes when its last request ends.
func (r *retiredUpstream) Wait(ctx context.Context) error {
	if err := r.backend.Wait(ctx); err != nil {
		return fmt.Errorf("%w (and %d on proxies retired by a reload)", err, r.gensInflight())
	}
	for _, g := range r.gens {
		if err := g.gen.Wait(ctx); err != nil {
			return fmt.Errorf("%d requests still in flight to %s on proxies retired by a reload: %w",
				r.gensInflight(), r.backend.Upstream(), err)
		}
	}
	return nil
}

func (r *retiredUpstream) gensInflight() int64 {
	var n int64
	for _, g := range r.gens {
		n += g.gen.Inflight()
	}
	return n
}

// Inflight is how many requests are still in flight to the previous upstream.
func (r *retiredUpstream) Inflight() int64 { return r.backend.Inflight() + r.gensInflight() }

// GoAway ends the WebSockets still open to the previous upstream with close frames.
func (r *retiredUpstream) GoAway() {
	var wg sync.WaitGroup
	wg.Go(r.backend.GoAway)
	for _, g := range r.gens {
		wg.Go(g.p.GoAway)
	}
	wg.Wait()
}

// Close closes the previous backend's idle connections; a retired proxy closes its own
// when its last request ends.
func (r *retiredUpstream) Close() { r.backend.Close() }
