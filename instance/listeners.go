package instance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/h2serve"
	"github.com/drainproxy/drainproxy/handover"
	"github.com/drainproxy/drainproxy/listener"
	"github.com/drainproxy/drainproxy/tlsfront"
)

// publicListeners opens the public listeners, at start and when a reload adds one, and
// removes those a reload drops (drained as at shutdown).
type publicListeners struct {
	upg     *handover.Handover
	d       *drain.Drainer
	front   *tlsfront.Front
	h2      *h2serve.Server
	handler http.Handler // the upstream side, behind each listener's front
	limits  config.Limits
	server  config.Server
	drain   config.Drain
	log     hclog.Logger

	mu     sync.Mutex
	byAddr map[string]*listener.Listener // by the address as configured
	served map[string]net.Listener       // what the drain serves each on (for Remove)
	// held, while not nil, collects the servers opened before serveHeld: a process an
	// upgrade started accepts nothing until it is ready (see handover.Hold for the admin listener).
	held []heldServer
	// refusedRemoved is what the listeners a reload removed had refused for want of
	// descriptors, so that the total stays a counter.
	refusedRemoved int64
}

// refusedForDescriptors is how many clients the public listeners, those removed
// included, closed at once for want of file descriptors (listener.Listener's reserve).
func (p *publicListeners) refusedForDescriptors() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.refusedRemoved
	for _, ln := range p.byAddr {
		n += ln.RefusedForDescriptors()
	}
	return n
}

// heldServer is a server open but not accepting yet, and the listener it will serve.
type heldServer struct {
	srv    drain.Server
	public net.Listener
}

// hold makes open keep the servers from accepting until serveHeld.
func (p *publicListeners) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = []heldServer{}
}

// serveHeld starts accepting on the servers hold kept back. A drain that began meanwhile
// refuses them: their copies of the sockets are closed (the process that handed them
// over still serves on its own).
func (p *publicListeners) serveHeld() error {
	p.mu.Lock()
	held := p.held
	p.held = nil
	p.mu.Unlock()
	var first error
	for _, h := range held {
		if err := p.d.Add("public", h.srv, h.public); err != nil {
			h.public.Close()
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// open binds l's address and serves it; it returns the bound address.
func (p *publicListeners) open(ctx context.Context, l config.Listener) (string, error) {
	ln, err := p.upg.Listen(ctx, l.Address, "", p.limits.MaxConnections)
	if err != nil {
		return "", err
	}
	ln.SetHandshakeWait(p.drain.HandshakeWait)
	ln.SetLogger(p.log.Named("listener"))
	srv, public, err := p.newServer(l, ln)
	if err != nil {
		ln.Close()
		return "", fmt.Errorf("cannot serve HTTPS on %s: %w", l.Address, err)
	}
	p.mu.Lock()
	held := p.held != nil
	if held {
		p.held = append(p.held, heldServer{srv, public})
	}
	p.mu.Unlock()
	if !held {
		if err := p.d.Add("public", srv, public); err != nil {
			ln.Close()
			return "", err
		}
	}
	p.mu.Lock()
	p.byAddr[l.Address], p.served[l.Address] = ln, public
	p.mu.Unlock()
	return ln.Addr().String(), nil
}

// newServer builds l's server on the engine server.engine names, and the listener it
// serves (ln, or ln behind TLS).
func (p *publicListeners) newServer(l config.Listener, ln *listener.Listener) (drain.Server, net.Listener, error) {
	h := p.d.Handler(p.front.Handler(l, p.handler))
	if p.server.Engine == config.EngineH1serve {
		srv := newH1Server(h, p.limits, p.log)
		if l.TLS == nil {
			p.h2.ConfigureH1(srv, !l.DisableH2C)
		}
		srv.ConnState = ln.ConnState // max_connections closes idle keep-alive connections to make room
		public, err := p.front.WrapH1(l, ln, srv)
		return srv, public, err
	}
	srv := newServer(h, p.limits, p.log)
	if l.TLS == nil {
		p.h2.Configure(srv, !l.DisableH2C)
	}
	srv.ConnState = ln.ConnState // max_connections closes idle keep-alive connections to make room
	public, err := p.front.Wrap(l, ln, srv)
	return drain.HTTPServer(srv), public, err
}

// remove drains the listener opened for addr and stops it for good.
func (p *publicListeners) remove(addr string) error {
	p.mu.Lock()
	ln, public := p.byAddr[addr], p.served[addr]
	if ln != nil {
		p.refusedRemoved += ln.RefusedForDescriptors()
	}
	delete(p.byAddr, addr)
	delete(p.served, addr)
	held := slices.ContainsFunc(p.held, func(h heldServer) bool { return h.public == public })
	p.held = slices.DeleteFunc(p.held, func(h heldServer) bool { return h.public == public })
	p.mu.Unlock()
	if held { // never served: nothing to drain
		p.upg.Forget(ln)
		return public.Close()
	}
	if ln == nil {
		return nil
	}
	p.upg.Forget(ln)
	return p.d.Remove(public)
}
