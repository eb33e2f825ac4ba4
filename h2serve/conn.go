package h2serve

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// maxStreamID is the largest stream id: the last stream id of the first, announcing
// GOAWAY of a graceful shutdown (RFC 9113, 6.8).
const maxStreamID = 1<<31 - 1

// Steps of a connection's drain.
const (
	stepServing  = iota // no GOAWAY yet
	stepAnnounce        // GOAWAY(2^31-1) and a PING are queued or sent; waiting for the PING's ack
	stepFinal           // the ack came (or the wait timed out): the server's own GOAWAY is asked for
	stepClosed          // closed by us, once no stream was left
)

// conn is an HTTP/2 connection as x/net/http2 serves it. It passes every byte through
// unchanged, follows the frames in both directions, and for the drain can put a GOAWAY and
// a PING between two of the server's frames. It closes the connection once the server's
// own GOAWAY has gone out and no stream is left, instead of waiting for the client to
// hang up (or for x/net/http2's one-second timer).
type conn struct {
	net.Conn
	srv *Server

	// shutdown asks this connection's http2.Server for its graceful shutdown: a GOAWAY
	// with the last stream id it processed, then the end of the connection once its
	// streams are done.
	shutdown func()

	wmu       sync.Mutex // serializes writes: the server's and the injected frames
	out       frameScanner
	outFrames int    // frames the server has sent; its SETTINGS must come first
	inject    []byte // frames to write at the next frame boundary

	rmu sync.Mutex // held by the (single) reader while it scans
	in  frameScanner

	mu       sync.Mutex
	step     int
	ping     [8]byte
	open     map[uint32]struct{} // client streams not yet ended
	maxSeen  uint32              // the highest client stream id seen
	lastID   uint32              // from the server's own GOAWAY, once it went out
	finalOut bool                // the server's own GOAWAY went out
	closing  sync.Once

	idleAt time.Time // when open last became empty (or the connection opened)
	onIdle func()    // wakes a listener waiting for room (listener.AttachMultiplexed)
}

// tlsConn is a conn over TLS: x/net/http2 reads the TLS state through ConnectionState.
type tlsConn struct {
	*conn
	tc *tls.Conn
}

func (c tlsConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

func newConn(nc net.Conn, srv *Server, sawPreface bool) *conn {
	c := &conn{Conn: nc, srv: srv, open: make(map[uint32]struct{}), idleAt: time.Now(), onIdle: func() {}}
	if !sawPreface {
		c.in.skip = len(http2.ClientPreface)
	}
	return c
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rmu.Lock()
		for i := 0; i < n; {
			i += c.in.advance(p[i:n], c.onIn)
		}
		c.rmu.Unlock()
		c.closeIfDone()
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	n, err := c.writeLocked(p)
	done := err == nil && c.done()
	c.wmu.Unlock()
	if done {
		c.closeNow()
	}
	return n, err
}

func (c *conn) writeLocked(p []byte) (int, error) {
	n, from := 0, 0
	for i := 0; i < len(p); {
		if c.inject != nil && c.out.atBoundary() && i > from {
			m, err := c.Conn.Write(p[from:i])
			n += m
			if err != nil {
				return n, err
			}
			from = i
		}
		if err := c.flushInject(); err != nil {
			return n, err
		}
		i += c.out.advance(p[i:], c.onOut)
	}
	if from < len(p) {
		m, err := c.Conn.Write(p[from:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, c.flushInject()
}

// flushInject writes the injected frames if the stream is at a frame boundary.
func (c *conn) flushInject() error {
	if c.inject == nil || !c.out.atBoundary() || c.outFrames == 0 {
		return nil
	}
	b := c.inject
	c.inject = nil
	_, err := c.Conn.Write(b)
	return err
}

// announce begins the connection's drain: GOAWAY with the largest stream id (new streams
// are not welcome; none the client sent is refused) and a PING whose ack proves that
// the client has seen it, and that every stream it opened before has reached the server.
func (c *conn) announce() {
	c.mu.Lock()
	if c.step != stepServing {
		c.mu.Unlock()
		return
	}
	c.step = stepAnnounce
	rand.Read(c.ping[:])
	ping := c.ping
	c.mu.Unlock()

	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteGoAway(maxStreamID, http2.ErrCodeNo, nil)
	fr.WritePing(false, ping)

	c.wmu.Lock()
	c.inject = buf.Bytes()
	err := c.flushInject() // at once when the server is not writing; else at its next frame boundary
	c.wmu.Unlock()
	if err != nil {
		c.final() // the connection is failing anyway; let the server end it
		return
	}
	c.srv.afterAnnounce(c)
}

// final asks the server for its own GOAWAY, with the last stream it processed.
func (c *conn) final() {
	c.mu.Lock()
	if c.step >= stepFinal {
		c.mu.Unlock()
		return
	}
	c.step = stepFinal
	c.mu.Unlock()
	c.shutdown()
}

// onIn sees each frame the client sends, on the reading goroutine.
func (c *conn) onIn(f frameTop) {
	switch f.typ {
	case http2.FrameHeaders:
		c.mu.Lock()
		if f.streamID%2 == 1 && f.streamID > c.maxSeen {
			c.maxSeen = f.streamID
			if !c.finalOut || f.streamID <= c.lastID {
				c.open[f.streamID] = struct{}{}
			}
		}
		c.mu.Unlock()
	case http2.FrameRSTStream:
		c.mu.Lock()
		c.endStreamLocked(f.streamID)
		c.mu.Unlock()
	case http2.FramePing:
		if f.flags.Has(http2.FlagPingAck) {
			c.mu.Lock()
			acked := c.step == stepAnnounce && f.data == c.ping
			c.mu.Unlock()
			if acked {
				// Every frame the client sent before the ack has been read, and so
				// processed: x/net/http2 reads the next frame only once the last one is.
				go c.final()
			}
		}
	}
}

// onOut sees each frame the server sends, on the writing goroutine.
func (c *conn) onOut(f frameTop) {
	c.outFrames++
	switch f.typ {
	case http2.FrameHeaders, http2.FrameData:
		if f.flags&0x1 != 0 { // END_STREAM, the same bit for both
			c.mu.Lock()
			c.endStreamLocked(f.streamID)
			c.mu.Unlock()
		}
	case http2.FrameRSTStream:
		c.mu.Lock()
		c.endStreamLocked(f.streamID)
		c.mu.Unlock()
	case http2.FrameGoAway:
		// Only the server's own frames are scanned, not the injected ones: this is the
		// final GOAWAY (of the drain, of an idle timeout or of an error).
		last := binary.BigEndian.Uint32(f.data[:4]) & maxStreamID
		c.mu.Lock()
		c.finalOut = true
		c.lastID = last
		for id := range c.open {
			if id > last {
				delete(c.open, id) // not processed: the client retries it elsewhere
			}
		}
		c.mu.Unlock()
	}
}

// done reports whether the server's own GOAWAY went out and no stream is left, with the
// server's bytes at a frame boundary. Call with wmu held.
func (c *conn) done() bool {
	if !c.out.atBoundary() || c.inject != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finalOut && len(c.open) == 0 && c.step < stepClosed
}

// closeIfDone closes the connection when done, from the reading side (a client's
// RST_STREAM can end the last stream with nothing more to write). It never waits for a
// write in progress, which may be blocked on a client that does not read: that write
// checks when it ends. (If it checked just before this read's news, the connection is
// left to x/net/http2, which closes it a second after its last stream.)
func (c *conn) closeIfDone() {
	if !c.wmu.TryLock() {
		return
	}
	done := c.done()
	c.wmu.Unlock()
	if done {
		c.closeNow()
	}
}

// closeNow closes the connection: every response went out, so waiting for the client
// to hang up would only keep the process for a round trip. Bytes the client sent that
// nobody read would make the kernel answer the close with a reset, which can drop our
// last unsent bytes; with bytes unread the close is left to the reader, which checks
// again after its next read.
func (c *conn) closeNow() {
	if unreadBytes(c.Conn) > 0 {
		return
	}
	c.mu.Lock()
	if c.step == stepClosed {
		c.mu.Unlock()
		return
	}
	c.step = stepClosed
	c.mu.Unlock()
	c.closing.Do(func() {
		c.srv.closedEarly.Add(1)
		c.Conn.Close()
	})
}

// endStreamLocked forgets an ended stream; the connection turns idle with its last.
func (c *conn) endStreamLocked(id uint32) {
	if _, ok := c.open[id]; !ok {
		return
	}
	delete(c.open, id)
	if len(c.open) == 0 {
		c.idleAt = time.Now()
		c.onIdle()
	}
}

// IdleSince implements listener.Multiplexed: a connection with no stream open is idle
// for max_connections, like an HTTP/1 keep-alive connection between requests.
func (c *conn) IdleSince() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleAt, len(c.open) == 0 && c.step == stepServing
}

// Reclaim implements listener.Multiplexed: when the connection is still idle, it writes
// a GOAWAY (no error, the last stream the client opened) between two of the server's
// frames and closes the connection, to make room under max_connections for a new
// client. A connection that opened a stream meanwhile, is draining, or has the server in
// the middle of a frame is left alone.
func (c *conn) Reclaim() bool {
	if !c.wmu.TryLock() { // the server is writing: not idle for long
		return false
	}
	defer c.wmu.Unlock()
	if !c.out.atBoundary() || c.inject != nil || c.outFrames == 0 {
		return false
	}
	c.mu.Lock()
	if len(c.open) > 0 || c.step != stepServing {
		c.mu.Unlock()
		return false
	}
	c.step = stepClosed // no stream is accepted from here on: the reader sees a closed conn
	last := c.maxSeen
	c.mu.Unlock()
	var buf bytes.Buffer
	http2.NewFramer(&buf, nil).WriteGoAway(last, http2.ErrCodeNo, nil)
	c.Conn.SetWriteDeadline(time.Now().Add(time.Second)) // an idle client's socket has room for 17 bytes
	c.Conn.Write(buf.Bytes())
	c.closing.Do(func() { c.Conn.Close() })
	return true
}
