// Package badupstream is a malicious HTTP/1 upstream for tests: on 127.0.0.1 it answers
// each request with one of a corpus of broken responses, chosen by the request path
// (/<case name>), the way ordinary and hostile apps get HTTP wrong: bytes after a
// response, bodies where none may be, doubtful lengths, bad chunking, 1xx floods, bad
// status codes, malformed header lines, huge heads.
//
// Every byte it sends on behalf of a request carries that request's nonce (the X-Nonce
// request header) as "nonce:<value>", so a client behind a proxy can check that nothing it
// receives was meant for another client: see Foreign.
package badupstream

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// NonceHeader is the request header whose value tags every byte sent for that request.
const NonceHeader = "X-Nonce"

// LateStray is the path of the poisoning case that is not in Cases: the upstream answers,
// then after ?delay=<duration> sends a second complete response (tagged with the same
// nonce) on the connection, and only then reads the next request.
const LateStray = "late-stray"

// Case is one broken (or, for "ok", correct) way to answer.
type Case struct {
	Name string
	// Want is the status a careful proxy answers the client with: the upstream's when the
	// response can be passed on, 502 when it cannot. 0: the client gets no complete answer
	// (the response is cut short after its head went out).
	Want int
	// Body is true when a client that gets Want also gets the upstream's body intact.
	Body bool
	// Method is the method to send this case with ("" for any; body-on-head needs HEAD).
	Method string
	// respond writes the answer on c, each part in a write of its own unless coalesce;
	// false closes the connection afterwards.
	respond func(c net.Conn, nonce string, coalesce bool) (keep bool)
}

// tagged is a complete, valid response whose body is the nonce tag.
func tagged(status int, nonce string) string {
	body := "nonce:" + nonce
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nX-Tag: nonce:%s\r\n\r\n%s",
		status, http.StatusText(status), len(body), nonce, body)
}

// writes returns a respond function that sends each part in its own write (so they
// usually arrive as separate segments), then keeps the connection or not.
func writes(keep bool, parts ...func(nonce string) string) func(net.Conn, string, bool) bool {
	return func(c net.Conn, nonce string, coalesce bool) bool {
		var all strings.Builder
		for _, p := range parts {
			if coalesce {
				all.WriteString(p(nonce))
				continue
			}
			if _, err := io.WriteString(c, p(nonce)); err != nil {
				return false
			}
		}
		if coalesce {
			if _, err := io.WriteString(c, all.String()); err != nil {
				return false
			}
		}
		return keep
	}
}

func raw(format string) func(string) string {
	return func(nonce string) string { return strings.ReplaceAll(format, "{n}", nonce) }
}

func ok(nonce string) string     { return tagged(200, nonce) }
func second(nonce string) string { return tagged(200, nonce) }

// chunk encodes s as one chunk.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// Cases is the corpus, "ok" first.
func Cases() []Case {
	smuggled := func(n string) string { return tagged(200, n) }
	return []Case{
		{Name: "ok", Want: 200, Body: true, respond: writes(true, ok)},
		{Name: "late-second-response", Want: 200, Body: true, respond: writes(true, ok, second)},
		{Name: "second-response-same-write", Want: 200, Body: true, respond: writes(true,
			func(n string) string { return ok(n) + second(n) })},
		{Name: "body-on-204", Want: 204, respond: writes(true,
			raw("HTTP/1.1 204 No Content\r\nX-Tag: nonce:{n}\r\n\r\n"), smuggled)},
		{Name: "body-on-204-with-length", Want: 204, respond: writes(true,
			func(n string) string {
				s := smuggled(n)
				return fmt.Sprintf("HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n", len(s))
			}, smuggled)},
		{Name: "body-on-304", Want: 304, respond: writes(true,
			raw("HTTP/1.1 304 Not Modified\r\nETag: \"{n}\"\r\n\r\n"), smuggled)},
		// Python's http.server with do_HEAD = do_GET: a HEAD gets the body too. The body
		// is a response of its own, the worst case.
		{Name: "body-on-head", Want: 200, Body: true, Method: http.MethodHead, respond: writes(true,
			func(n string) string {
				return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Tag: nonce:%s\r\n\r\n", len(smuggled(n)), n)
			}, smuggled)},
		// An app whose idle timeout fired: a 408 on the kept connection, then it closes.
		{Name: "408-after-response", Want: 200, Body: true, respond: writes(false, ok,
			func(n string) string { return tagged(http.StatusRequestTimeout, n) })},
		{Name: "length-and-chunked", Want: 200, Body: true, respond: writes(true, func(n string) string {
			body := chunk("nonce:"+n) + "0\r\n\r\n"
			s := smuggled(n)
			// The length covers the smuggled response too: an upstream that frames by
			// length meant it as part of this body.
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s%s",
				len(body)+len(s), body, s)
		})},
		{Name: "duplicate-equal-lengths", Want: 200, Body: true, respond: writes(true, func(n string) string {
			body := "nonce:" + n
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%s",
				len(body), len(body), body)
		}, smuggled)},
		{Name: "conflicting-lengths", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nnonce:{n}"))},
		{Name: "negative-length", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nnonce:{n}"))},
		{Name: "garbage-length", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nnonce:{n}"))},
		{Name: "length-with-comma", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"))},
		{Name: "short-body", Want: 0, respond: writes(false,
			raw("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nnonce:{n}"))},
		{Name: "bad-chunk-size", Want: 0, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnonce:{n}\r\n0\r\n\r\n"))},
		{Name: "chunk-longer-than-said", Want: 0, respond: writes(true, func(n string) string {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nnonce:" + n + "\r\n0\r\n\r\n"
		})},
		{Name: "unsupported-transfer-encoding", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"))},
		{Name: "1xx-flood", Want: 502, respond: writes(true, func(n string) string {
			return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </"+n+".css>; rel=preload\r\n\r\n", 100) + ok(n)
		})},
		{Name: "two-early-hints", Want: 200, Body: true, respond: writes(true, func(n string) string {
			return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 2) + ok(n)
		})},
		{Name: "101-without-upgrade", Want: 502, respond: writes(true,
			raw("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nnonce:{n}"))},
		{Name: "http10-without-length", Want: 200, Body: true, respond: writes(false,
			raw("HTTP/1.0 200 OK\r\n\r\nnonce:{n}"))},
		{Name: "http10-keepalive-chunked", Want: 200, respond: writes(true, func(n string) string {
			body := chunk("nonce:"+n) + "0\r\n\r\n"
			return fmt.Sprintf("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s",
				len(body), body)
		})},
		{Name: "header-without-colon", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nX-Broken\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "space-in-header-name", Want: 200, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nX-Broken nonce:{n}\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "nul-in-header", Want: 502, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nX-Tag: nonce:{n}\x00x\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "nul-in-status-line", Want: 200, respond: writes(true,
			raw("HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "folded-header", Want: 200, respond: writes(true,
			raw("HTTP/1.1 200 OK\r\nX-Tag: a\r\n nonce:{n}\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "status-099", Want: 502, respond: writes(true,
			raw("HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "status-000", Want: 502, respond: writes(true,
			raw("HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "status-1000", Want: 502, respond: writes(true,
			raw("HTTP/1.1 1000 X\r\nContent-Length: 0\r\n\r\n"))},
		{Name: "not-http", Want: 502, respond: writes(false, raw("nonce:{n}\r\n\r\n"))},
		{Name: "huge-header", Want: 502, respond: func(c net.Conn, _ string, _ bool) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Huge: ")
			if err := WriteFill(c, 2<<20); err != nil {
				return false
			}
			io.WriteString(c, "\r\nContent-Length: 0\r\n\r\n")
			return true
		}},
	}
}

// WriteFill writes n bytes of 'a' to w through one small buffer: a huge header costs the
// writer nothing.
func WriteFill(w io.Writer, n int64) error {
	buf := bytes.Repeat([]byte{'a'}, 32<<10)
	for n > 0 {
		b := buf
		if int64(len(b)) > n {
			b = b[:n]
		}
		m, err := w.Write(b)
		if err != nil {
			return err
		}
		n -= int64(m)
	}
	return nil
}

var (
	nonceTag   = regexp.MustCompile(`nonce:([0-9A-Za-z_-]+)`)
	validNonce = regexp.MustCompile(`^[0-9A-Za-z_-]+$`)
)

// Foreign returns the first nonce tag in b that is not own, or "" when every tag in b is
// own (or b has none).
func Foreign(b []byte, own string) string {
	for _, m := range nonceTag.FindAllSubmatch(b, -1) {
		if string(m[1]) != own {
			return string(m[1])
		}
	}
	return ""
}

// Server is the bad upstream on a loopback listener.
type Server struct {
	// Coalesce sends each answer in one write, so that bytes after a response arrive
	// with it; otherwise each part is a write of its own and may come later. Set it
	// before the first request.
	Coalesce bool

	ln    net.Listener
	done  sync.Map // nonce -> struct{}: everything for it is written
	cases map[string]Case
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Start listens on 127.0.0.1 (a free port) and serves the corpus until Close.
func Start() (*Server, error) { return StartOn("127.0.0.1:0") }

// StartOn is Start on addr (host:port).
func StartOn(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("badupstream: listen: %w", err)
	}
	s := &Server{ln: ln, cases: map[string]Case{}, conns: map[net.Conn]struct{}{}}
	for _, c := range Cases() {
		s.cases[c.Name] = c
	}
	s.wg.Go(s.accept)
	return s, nil
}

// Addr is the listener's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Done reports whether everything the server sends for the request tagged nonce is
// written: on loopback, it is in the peer's receive queue.
func (s *Server) Done(nonce string) bool {
	_, ok := s.done.Load(nonce)
	return ok
}

// Close stops the listener, closes every connection and waits for their goroutines.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		})
	}
}

// serve answers the requests on c until a case closes it or the peer does. An unknown
// path gets a 404; GET /<case> and any other method choose the case alike.
func (s *Server) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
		nonce := req.Header.Get(NonceHeader)
		if !validNonce.MatchString(nonce) {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		name := strings.TrimPrefix(req.URL.Path, "/")
		if name == LateStray {
			// Answered, then, after the delay, a second complete response that nobody
			// asked for: it poisons the next request written on the connection meanwhile.
			delay, _ := time.ParseDuration(req.URL.Query().Get("delay"))
			io.WriteString(c, ok(nonce))
			time.Sleep(delay)
			if _, err := io.WriteString(c, tagged(200, nonce)); err != nil {
				return
			}
			s.done.Store(nonce, struct{}{})
			continue
		}
		cs, found := s.cases[name]
		if !found {
			io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
			continue
		}
		keep := cs.respond(c, nonce, s.Coalesce)
		s.done.Store(nonce, struct{}{})
		if !keep {
			return
		}
	}
}
