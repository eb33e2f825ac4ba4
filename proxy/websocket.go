package proxy

// WebSocket close frames. When drainproxy itself ends a WebSocket (the drain's deadline, or
// the restart of the app instance it runs to), it first sends a close frame with status
// 1001 (going away) to the client, and to the app while the app's side is open, then
// closes the TCP connections: a client sees 1001 and can reconnect at once, instead of
// 1006 (abnormal closure). A close frame only ever goes out between two frames of the
// stream it joins: each direction's frames are followed as they pass (frameScanner), and
// a close waits for the frame under way to end, briefly, or is not sent at all. RFC 6455
// allows a control frame between the fragments of a message, never inside a frame.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// CloseGoingAway is the status of the close frames drainproxy sends.
	CloseGoingAway = 1001
	// wsBoundaryWait bounds the wait for a frame under way to end before a close frame
	// goes out; past it, the connection is closed without one.
	wsBoundaryWait = 250 * time.Millisecond
	// wsLinger is how long the peers get to answer the close frame and close, before
	// the connections are closed anyway. Together with wsBoundaryWait it stays under the
	// second the drain gives handlers to end after its deadline.
	wsLinger = 500 * time.Millisecond
)

type wsKey struct{}

// wsSession is one proxied WebSocket: both directions of it and how to end it.
type wsSession struct {
	backend  *Backend
	toClient wsStream // frames from the app, written to the client
	toApp    wsStream // frames from the client, written to the app (masked)
	appEnded atomic.Bool
	done     chan struct{} // closed when the exchange is over
	once     sync.Once
}

// isWebSocketUpgrade reports whether r asks for a WebSocket (HTTP/1.1 Upgrade).
func isWebSocketUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// startWebSocket registers a session for r and returns the writer and request that
// ReverseProxy must use so that both ends of the upgraded connection pass through it, and
// what ends the session once the exchange is over.
func (p *Proxy) startWebSocket(b *Backend, w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	s := &wsSession{backend: b, done: make(chan struct{})}
	s.toClient.injected = make(chan struct{})
	s.toApp.injected = make(chan struct{})
	s.toApp.masked = true
	p.websockets.Store(s, struct{}{})
	end := func() {
		close(s.done)
		p.websockets.Delete(s)
	}
	return &wsWriter{ResponseWriter: w, s: s}, r.WithContext(context.WithValue(r.Context(), wsKey{}, s)), end
}

// wsAppSide is ModifyResponse's part: the upgraded connection to the app of a 101 answer
// to a WebSocket request passes through the session.
func wsAppSide(res *http.Response) {
	if res.StatusCode != http.StatusSwitchingProtocols {
		return
	}
	s, _ := res.Request.Context().Value(wsKey{}).(*wsSession)
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if s == nil || !ok {
		return
	}
	s.toApp.setConn(rwc)
	res.Body = &wsAppConn{ReadWriteCloser: rwc, s: s}
}

// wsWriter is the ResponseWriter of a WebSocket request: its Hijack hands ReverseProxy a
// client connection whose writes pass through the session.
type wsWriter struct {
	http.ResponseWriter
	s *wsSession
}

func (w *wsWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.s.toClient.setConn(c)
	if g, ok := c.(interface{ SetGoingAway(func()) }); ok {
		g.SetGoingAway(w.s.goAway) // the drain's deadline (drain.upgradedConn)
	}
	return &wsClientConn{Conn: c, s: w.s}, brw, nil
}

func (w *wsWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RecordUpstreamError passes the error on to the wrapped writer's ErrorRecorder, if any.
func (w *wsWriter) RecordUpstreamError(reason string, status int, err error) {
	if rec := recorderOf(w.ResponseWriter); rec != nil {
		rec.RecordUpstreamError(reason, status, err)
	}
}

// wsClientConn is the client's connection as ReverseProxy copies to it. It has no
// ReadFrom, so that io.Copy writes through Write.
type wsClientConn struct {
	net.Conn
	s *wsSession
}

func (c *wsClientConn) Write(p []byte) (int, error) { return c.s.toClient.Write(p) }

// wsAppConn is the app's side of the upgraded connection.
type wsAppConn struct {
	io.ReadWriteCloser
	s *wsSession
}

func (c *wsAppConn) Read(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Read(p)
	if err != nil {
		c.s.appEnded.Store(true) // the app closed its side, or the connection broke
	}
	return n, err
}

func (c *wsAppConn) Write(p []byte) (int, error) { return c.s.toApp.Write(p) }

// goAway sends the close frames and closes both connections, once; it returns when done
// (at most wsBoundaryWait + wsLinger).
func (s *wsSession) goAway() {
	s.once.Do(func() {
		start := time.Now()
		// The client's frame first: the app answers its own at once and closes, and the
		// proxy then closes the client's connection, so a client frame sent beside the
		// app's could lose that race and the client see the connection end without one.
		if !s.toClient.peerClosed() { // else the app's own close handshake is under way
			s.toClient.inject(closeFrame(CloseGoingAway, false))
		}
		if !s.appEnded.Load() && !s.toApp.peerClosed() { // the client may have answered first
			s.toApp.inject(closeFrame(CloseGoingAway, true))
		}
		// Both waits for a frame boundary and the linger together take no longer than one
		// boundary wait and the linger did when the two frames went out side by side.
		t := time.NewTimer(max(time.Until(start.Add(wsBoundaryWait+wsLinger)), wsLinger/4))
		defer t.Stop()
		select {
		case <-s.done: // both peers answered and closed
		case <-t.C:
		}
		s.toClient.close()
		s.toApp.close()
	})
}

// GoAway ends every WebSocket open through the proxy with a close frame to each side
// (status 1001, going away) and returns once they are closed.
func (p *Proxy) GoAway() { p.goAway(nil) }

// GoAway ends every WebSocket open to this backend as Proxy.GoAway does: an app restart
// does so before it stops the instance the backend reached.
func (b *Backend) GoAway() { b.proxy.goAway(b) }

func (p *Proxy) goAway(only *Backend) {
	var wg sync.WaitGroup
	p.websockets.Range(func(k, _ any) bool {
		if s := k.(*wsSession); only == nil || s.backend == only {
			wg.Go(s.goAway)
		}
		return true
	})
	wg.Wait()
}

// wsStream is one direction of a WebSocket: the frames ReverseProxy writes to one peer,
// and the close frame drainproxy may add between two of them.
type wsStream struct {
	mu   sync.Mutex // held by Write, also while the peer is slow to take the bytes
	conn atomic.Pointer[writeCloser]
	scan frameScanner
	// closeSeen mirrors scan.closeSeen, readable without waiting for a Write under way.
	closeSeen atomic.Bool
	masked    bool // client to app: a frame drainproxy adds must be masked
	sent      bool // our close frame went out (or was given up): later writes are dropped
	pending   atomic.Pointer[[]byte]
	injected  chan struct{} // closed once the close frame went out
}

// writeCloser boxes the peer's connection for an atomic pointer.
type writeCloser struct{ io.WriteCloser }

func (st *wsStream) setConn(c io.WriteCloser) { st.conn.Store(&writeCloser{c}) }

// advance moves the scanner over p, which went out. st.mu is held.
func (st *wsStream) advance(p []byte) {
	st.scan.advance(p)
	if st.scan.closeSeen {
		st.closeSeen.Store(true)
	}
}

// Write passes p on to the peer and follows its frames. Once a close frame is pending,
// it passes on only the rest of the frame under way, then the close frame; what comes
// after is dropped (a peer must send nothing after a close frame, and gets nothing).
func (st *wsStream) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sent {
		return len(p), nil
	}
	conn := st.conn.Load()
	if f := st.pending.Load(); f != nil {
		n := st.scan.untilBoundary(p)
		if n < 0 { // the frame under way goes on past p
			k, err := conn.Write(p)
			st.advance(p[:k])
			return k, err
		}
		k, err := conn.Write(p[:n])
		st.advance(p[:k])
		if err != nil {
			return k, err
		}
		st.sendLocked(conn, *f)
		return len(p), nil
	}
	k, err := conn.Write(p)
	st.advance(p[:k])
	if f := st.pending.Load(); f != nil && err == nil && st.scan.atBoundary() {
		st.sendLocked(conn, *f)
	}
	return k, err
}

// inject sends frame at the next frame boundary of the stream, waiting at most
// wsBoundaryWait for it; it reports whether the frame went out.
func (st *wsStream) inject(frame []byte) bool {
	st.pending.Store(&frame)
	if st.mu.TryLock() { // else a Write is under way, and sends it when it can
		if conn := st.conn.Load(); !st.sent && conn != nil && st.scan.atBoundary() {
			st.sendLocked(conn, frame)
		}
		st.mu.Unlock()
	}
	t := time.NewTimer(wsBoundaryWait)
	defer t.Stop()
	select {
	case <-st.injected:
		return true
	case <-t.C:
		return false
	}
}

// sendLocked writes the close frame to conn; st.mu is held.
func (st *wsStream) sendLocked(conn *writeCloser, frame []byte) {
	if d, ok := conn.WriteCloser.(interface{ SetWriteDeadline(time.Time) error }); ok {
		d.SetWriteDeadline(time.Now().Add(wsBoundaryWait))
	}
	st.sent = true
	if _, err := conn.Write(frame); err == nil {
		close(st.injected)
	}
}

// peerClosed reports whether the peer writing this direction has sent its close frame.
func (st *wsStream) peerClosed() bool { return st.closeSeen.Load() }

// close closes the connection this direction writes to; it never waits for a Write.
func (st *wsStream) close() {
	if c := st.conn.Load(); c != nil {
		c.Close()
	}
}

// closeFrame is a close frame with status code and no reason; masked (with a fresh key)
// when a client sends it.
func closeFrame(code uint16, masked bool) []byte {
	payload := binary.BigEndian.AppendUint16(nil, code)
	if !masked {
		return append([]byte{0x88, byte(len(payload))}, payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	f := append([]byte{0x88, 0x80 | byte(len(payload))}, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// frameScanner follows the frames of one direction of a WebSocket as its bytes pass: it
// knows whether the stream is between two frames, and whether a close frame has passed.
type frameScanner struct {
	head      [14]byte // the header of the frame under way, as far as it has passed
	have      int      // bytes of head seen; 0 between frames or in a payload
	left      uint64   // payload bytes of the frame under way still to pass
	closeSeen bool
}

func (f *frameScanner) atBoundary() bool { return f.have == 0 && f.left == 0 }

// headerLen is the length of a frame header whose second byte is b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

// advance moves the scanner over p.
func (f *frameScanner) advance(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			k := uint64(len(p))
			if k > f.left {
				k = f.left
			}
			f.left -= k
			p = p[k:]
			continue
		}
		f.head[f.have] = p[0]
		f.have++
		p = p[1:]
		if f.have < 2 || f.have < headerLen(f.head[1]) {
			continue
		}
		switch f.head[1] & 0x7f {
		case 126:
			f.left = uint64(binary.BigEndian.Uint16(f.head[2:4]))
		case 127:
			f.left = binary.BigEndian.Uint64(f.head[2:10])
		default:
			f.left = uint64(f.head[1] & 0x7f)
		}
		if f.head[0]&0x0f == 0x8 {
			f.closeSeen = true
		}
		f.have = 0
	}
}

// untilBoundary is how many bytes of p end the frame under way: 0 at a boundary, -1 when
// the frame goes on past p.
func (f *frameScanner) untilBoundary(p []byte) int {
	if f.atBoundary() {
		return 0
	}
	g := *f
	for n := 0; n < len(p); {
		if g.left > 0 {
			k := uint64(len(p) - n)
			if k > g.left {
				k = g.left
			}
			g.advance(p[n : n+int(k)])
			n += int(k)
		} else {
			g.advance(p[n : n+1])
			n++
		}
		if g.atBoundary() {
			return n
		}
	}
	return -1
}
