package h2serve

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cServer serves h on 127.0.0.1 with s handling HTTP/2 (h2c) and returns its address.
func h2cServer(t *testing.T, s *Server, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	s.Configure(srv, true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// rawClient is an HTTP/2 client written frame by frame, so that the test chooses when
// each frame goes out and sees every frame that comes in.
type rawClient struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.henc = hpack.NewEncoder(&rc.hbuf)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawClient) get(streamID uint32, path string) {
	rc.t.Helper()
	rc.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "test"}, {":path", path}} {
		rc.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: streamID, BlockFragment: rc.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

// next reads frames until one for which want returns true, answering the server's
// SETTINGS on the way. It fails the test on a read error.
func (rc *rawClient) next(what string, want func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("waiting for %s: %v", what, err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			rc.fr.WriteSettingsAck()
		}
		if want(f) {
			return f
		}
	}
}

func isGoAway(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }

func endsStream(id uint32) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		if f.Header().StreamID != id {
			return false
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			return f.StreamEnded()
		case *http2.MetaHeadersFrame:
			return f.StreamEnded()
		case *http2.RSTStreamFrame:
			return true
		}
		return false
	}
}

// The drain's two steps on one connection: GOAWAY(2^31-1) and a PING first; a stream the
// client opens before it acks the PING is served, not refused; after the ack the real
// GOAWAY names it; and once the last stream ends the server closes the connection itself.
func TestDrainTwoStepGoAway(t *testing.T) {
	s := New(Options{PingTimeout: time.Minute}) // only the ack may move the drain on
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "slow")
	})
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
	rc := dialRaw(t, h2cServer(t, s, mux))

	rc.get(1, "/slow")
	rc.next("the server's SETTINGS", func(f http2.Frame) bool { _, ok := f.(*http2.SettingsFrame); return ok })
	for s.Conns() != 1 {
		time.Sleep(time.Millisecond) // the connection registers as the server starts it
	}

	s.Drain()
	ga := rc.next("the first GOAWAY", isGoAway).(*http2.GoAwayFrame)
	if ga.LastStreamID != maxStreamID || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("first GOAWAY: last stream %d, code %v; want %d, NO_ERROR", ga.LastStreamID, ga.ErrCode, maxStreamID)
	}
	ping := rc.next("the PING after the GOAWAY", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && !p.IsAck()
	}).(*http2.PingFrame)

	// A stream that was on its way when the GOAWAY left: it must be served.
	rc.get(3, "/fast")
	rc.fr.WritePing(true, ping.Data)
	// Its answer and the final GOAWAY come in either order.
	for ended, final := false, false; !ended || !final; {
		f := rc.next("stream 3's answer and the final GOAWAY", func(f http2.Frame) bool { return endsStream(3)(f) || isGoAway(f) })
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if f.LastStreamID != 3 || f.ErrCode != http2.ErrCodeNo {
				t.Fatalf("final GOAWAY: last stream %d, code %v; want 3, NO_ERROR", f.LastStreamID, f.ErrCode)
			}
			final = true
		case *http2.RSTStreamFrame:
			t.Fatalf("stream 3 was reset (%v): refused after it reached the server", f.ErrCode)
		default:
			ended = true
		}
	}
	if s.ClosedEarly() != 0 {
		t.Fatal("closed while stream 1 is still open")
	}

	close(release)
	rc.next("the end of stream 1", endsStream(1))
	lastEnd := time.Now()
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := rc.fr.ReadFrame()
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			t.Fatalf("after the last stream: %v; want the server to close the connection (EOF)", err)
		}
		break
	}
	t.Logf("closed %v after the last stream ended (x/net/http2 alone: 1s, or the client's close)", time.Since(lastEnd))
	if n := s.ClosedEarly(); n != 1 {
		t.Errorf("connections closed by the server once their last stream ended: %d; want 1 (not x/net/http2's timer)", n)
	}
}

// A connection that arrives during the drain delay is served without GOAWAY (told to go
// away at once, its client would reconnect over and over); once the listeners stop
// accepting it is told to go away the two-step way, and one that arrives after that is
// told at once, its first streams served.
func TestDrainLaterConnections(t *testing.T) {
	s := New(Options{})
	addr := h2cServer(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	s.Drain()
	during := dialRaw(t, addr)
	during.get(1, "/")
	if f := during.next("the answer during the delay", func(f http2.Frame) bool { return endsStream(1)(f) || isGoAway(f) }); isGoAway(f) {
		t.Fatal("a connection made during the delay was told to go away at once")
	}
	s.StopAccepting()
	if ga := during.next("the GOAWAY at stop accepting", isGoAway).(*http2.GoAwayFrame); ga.LastStreamID != maxStreamID {
		t.Fatalf("first GOAWAY at stop accepting: last stream %d; want %d", ga.LastStreamID, maxStreamID)
	}

	rc := dialRaw(t, addr)
	rc.get(1, "/")
	ga := rc.next("the first GOAWAY", isGoAway).(*http2.GoAwayFrame)
	if ga.LastStreamID != maxStreamID {
		t.Fatalf("first GOAWAY: last stream %d; want %d", ga.LastStreamID, maxStreamID)
	}
	ping := rc.next("the PING", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }).(*http2.PingFrame)
	rc.fr.WritePing(true, ping.Data)
	// Stream 1 is answered whether its end comes before or after the final GOAWAY.
	var ended, final bool
	for !ended || !final {
		f := rc.next("stream 1's answer and the final GOAWAY", func(f http2.Frame) bool { return endsStream(1)(f) || isGoAway(f) })
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.LastStreamID != 1 {
				t.Fatalf("final GOAWAY: last stream %d; want 1", g.LastStreamID)
			}
			final = true
			continue
		}
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			t.Fatal("stream 1 was reset")
		}
		ended = true
	}
}

// The frame scanner finds frame boundaries however the bytes are split.
func TestFrameScannerSplits(t *testing.T) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings()
	fr.WriteData(1, false, []byte("hello"))
	fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	fr.WriteGoAway(7, http2.ErrCodeNo, []byte("debug"))
	fr.WriteData(1, true, nil)
	wire := buf.Bytes()
	for chunk := 1; chunk <= len(wire); chunk++ {
		var s frameScanner
		var got []frameTop
		boundaries := 0
		for off := 0; off < len(wire); {
			end := min(off+chunk, len(wire))
			for i := off; i < end; {
				i += s.advance(wire[i:end], func(f frameTop) { got = append(got, f) })
				if s.atBoundary() {
					boundaries++
				}
			}
			off = end
		}
		if len(got) != 5 || boundaries != 5 {
			t.Fatalf("chunks of %d: %d frames, %d boundaries; want 5 and 5", chunk, len(got), boundaries)
		}
		if got[2].typ != http2.FramePing || got[2].data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
			t.Errorf("chunks of %d: PING %+v", chunk, got[2])
		}
		if got[3].typ != http2.FrameGoAway || got[3].data[3] != 7 {
			t.Errorf("chunks of %d: GOAWAY %+v", chunk, got[3])
		}
		if got[4].typ != http2.FrameData || got[4].flags&http2.FlagDataEndStream == 0 || got[4].streamID != 1 {
			t.Errorf("chunks of %d: last DATA %+v", chunk, got[4])
		}
	}
}
