package drain

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// The in-flight registry: every request inside Handler is on one of a few short lists, so
// that /status, the progress log and the deadline can say what the drain waits for. The
// request path pays two uncontended lock/unlock pairs and no allocation (the links live
// in the exchange); a reader walks the lists under the same locks, holding each only for
// the copy of its entries, and never blocks a request for longer than that.

// registryShards spreads requests over a few lists so that concurrent requests rarely
// share a lock.
const registryShards = 16

// MaxPathLen caps the path shown for an in-flight request.
const MaxPathLen = 120

type registry struct {
	shards [registryShards]registryShard
}

type registryShard struct {
	mu   sync.Mutex
	head *exchange
	_    [40]byte // keep shards on their own cache lines
}

func (g *registry) add(x *exchange) {
	// The shard follows from the exchange's address: no counter that every core writes.
	x.shard = &g.shards[(uintptr(unsafe.Pointer(x))>>7)%registryShards]
	s := x.shard
	s.mu.Lock()
	x.nextIn = s.head
	if s.head != nil {
		s.head.prevIn = x
	}
	s.head = x
	s.mu.Unlock()
}

func (g *registry) remove(x *exchange) {
	s := x.shard
	s.mu.Lock()
	if x.prevIn != nil {
		x.prevIn.nextIn = x.nextIn
	} else {
		s.head = x.nextIn
	}
	if x.nextIn != nil {
		x.nextIn.prevIn = x.prevIn
	}
	x.prevIn, x.nextIn = nil, nil
	s.mu.Unlock()
}

// each calls fn for every registered exchange, under its shard's lock: fn must be quick.
func (g *registry) each(fn func(x *exchange)) {
	for i := range g.shards {
		s := &g.shards[i]
		s.mu.Lock()
		for x := s.head; x != nil; x = x.nextIn {
			fn(x)
		}
		s.mu.Unlock()
	}
}

// What an in-flight exchange waits for.
const (
	WaitRequestBody     = "request body"     // the client is still sending its body
	WaitUpstreamHeaders = "upstream headers" // the app has not answered yet
	WaitResponseBody    = "response body"    // the response is being sent
	WaitTunnel          = "tunnel"           // an upgraded connection (WebSocket etc.) is open
)

// Protocols of an in-flight exchange.
const (
	ProtoHTTP1     = "HTTP/1.1"
	ProtoHTTP2     = "HTTP/2"
	ProtoGRPC      = "gRPC"
	ProtoWebSocket = "WebSocket"
	ProtoUpgrade   = "upgrade" // any other Upgrade
)

// InflightEntry is one request or upgraded connection in flight.
type InflightEntry struct {
	ID       string    `json:"id,omitempty"` // the request id (X-Request-Id), once the proxy set it
	Protocol string    `json:"protocol"`
	Method   string    `json:"method"`
	Path     string    `json:"path"` // without the query string, at most MaxPathLen bytes
	Client   string    `json:"client"`
	Started  time.Time `json:"started"`
	Age      Seconds   `json:"age_seconds"`
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
	WaitsFor string    `json:"waits_for"`
}

// Seconds is a duration that reads as seconds in JSON.
type Seconds float64

// Inflight is what is in flight now: the oldest entries first, at most the number asked
// for, and how many there are in all.
type Inflight struct {
	Total     int             `json:"total"`
	Requests  int             `json:"requests"`  // HTTP/1 requests
	Streams   int             `json:"streams"`   // HTTP/2 streams (gRPC included)
	Upgraded  int             `json:"upgraded"`  // WebSockets and other upgrades
	Truncated bool            `json:"truncated"` // Total > len(Entries)
	Entries   []InflightEntry `json:"entries"`
}

// Inflight lists what is in flight, oldest first, at most max entries (max <= 0: none,
// only the counts). It copies a few fields per request under short locks; requests are
// never blocked for longer than the copy of one shard.
func (d *Drainer) Inflight(max int) Inflight {
	return d.t.reg.snapshot(max, time.Now())
}

func (g *registry) snapshot(max int, now time.Time) Inflight {
	var in Inflight
	var all []*exchangeView
	g.each(func(x *exchange) {
		v := x.view()
		in.Total++
		switch {
		case v.waits == WaitTunnel:
			in.Upgraded++
		case v.x.Request.ProtoMajor >= 2:
			in.Streams++
		default:
			in.Requests++
		}
		if max > 0 {
			all = append(all, v)
		}
	})
	slices.SortFunc(all, func(a, b *exchangeView) int { return a.x.Start.Compare(b.x.Start) })
	if len(all) > max {
		all = all[:max]
	}
	in.Truncated = in.Total > len(all)
	in.Entries = make([]InflightEntry, 0, len(all))
	for _, v := range all {
		in.Entries = append(in.Entries, InflightEntry{
			ID: v.id, Protocol: v.proto, Method: v.x.Request.Method, Path: v.x.path,
			Client: v.x.Request.RemoteAddr, Started: v.x.Start.UTC(),
			Age:     Seconds(now.Sub(v.x.Start).Seconds()),
			BytesIn: v.in, BytesOut: v.out, WaitsFor: v.waits,
		})
	}
	return in
}

// exchangeView is what a reader may see of an exchange while it runs: the fields set
// before it was registered, and copies of the ones that change.
type exchangeView struct {
	x       *exchange
	id      string
	proto   string
	in, out int64
	waits   string
}

// view runs under x's shard lock (registry.each).
func (x *exchange) view() *exchangeView {
	v := &exchangeView{x: x, id: x.reqID, proto: x.proto, in: x.body.n.Load(), out: x.out.Load()}
	switch u := x.tunnel.Load(); {
	case u != nil:
		v.waits = WaitTunnel
		v.in += u.in.Load()
		v.out += u.out.Load()
	case x.headerSent.Load():
		v.waits = WaitResponseBody
	case x.body.ReadCloser != nil && x.Request.ContentLength != 0 && !x.body.done.Load():
		// (an HTTP/2 request without a body has a Body too, with ContentLength 0)
		v.waits = WaitRequestBody
	default:
		v.waits = WaitUpstreamHeaders
	}
	return v
}

// protocolOf names r's protocol for the in-flight list, as far as it is known before the
// handler runs: an HTTP/1 request that upgrades is renamed at the hijack (upgradeProtocol).
// It reads a header only for HTTP/2, where gRPC is told apart.
func protocolOf(r *http.Request) string {
	if r.ProtoMajor < 2 {
		return ProtoHTTP1
	}
	if r.Method == http.MethodConnect && r.Header.Get(":protocol") != "" {
		return ProtoWebSocket // RFC 8441's extended CONNECT
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return ProtoGRPC
	}
	return ProtoHTTP2
}

// upgradeProtocol names the protocol of an HTTP/1 request whose connection was hijacked.
func upgradeProtocol(r *http.Request) string {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return ProtoWebSocket
	}
	return ProtoUpgrade
}

// shownPath is r's path without the query string, capped at MaxPathLen bytes.
func shownPath(r *http.Request) string {
	p := r.URL.Path
	if p == "" {
		p = r.RequestURI
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
	}
	if len(p) > MaxPathLen {
		p = p[:MaxPathLen]
	}
	return p
}

// RecordRequestID implements proxy.IDRecorder: the in-flight list shows the id the
// proxy gave the request. The shard lock guards it, so that recording costs no allocation.
func (x *exchange) RecordRequestID(id string) {
	x.shard.mu.Lock()
	x.reqID = id
	x.shard.mu.Unlock()
}
