package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Raw is an HTTP/2 client connection driven frame by frame: the test decides when each
// frame leaves and sees every frame that arrives.
type h2Raw struct {
	t    testing.TB
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func newH2Raw(t testing.TB, c net.Conn) *h2Raw {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	r := &h2Raw{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.henc = hpack.NewEncoder(&r.hbuf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *h2Raw) get(id uint32, path string) {
	r.t.Helper()
	r.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", tlsDomain}, {":path", path}} {
		r.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// next reads frames until want says yes, acking the server's SETTINGS on the way.
func (r *h2Raw) next(what string, want func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", what, err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			r.fr.WriteSettingsAck()
		}
		if want(f) {
			return f
		}
	}
}

func h2StreamEnd(id uint32) func(http2.Frame) bool {
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

// HTTP/2 clients are told to go away at the start of the drain, while the delay still
// serves, the graceful two-step way: GOAWAY(2^31-1) and a PING; after the ack, GOAWAY
// with the last stream id; a stream sent in between is served; and the connection is
// closed by drainproxy once its last stream is done, without the client closing it.
func TestHTTP2GoAwayAtDrainStart(t *testing.T) {
	p, _, tlsPort, ca, _ := tlsStaticProxy(t, startUpstream(t), "-drain-delay", "3s")
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort),
		&tls.Config{RootCAs: ca.Pool, ServerName: tlsDomain, NextProtos: []string{http2.NextProtoTLS}})
	if err != nil {
		t.Fatal(err)
	}
	r := newH2Raw(t, c)
	r.get(1, "/")
	r.next("the answer to stream 1", h2StreamEnd(1))

	p.Signal(syscall.SIGTERM)
	p.WaitLog("drain started", 10*time.Second)
	ga := r.next("a GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if p.FindLog("drain delay over", 0) != nil {
		t.Errorf("the first GOAWAY came after the drain delay; want it at drain start")
	}
	if ga.LastStreamID != 1<<31-1 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("first GOAWAY: last stream %d, %v; want %d, NO_ERROR (the announcing GOAWAY of RFC 9113, 6.8)", ga.LastStreamID, ga.ErrCode, 1<<31-1)
	}
	ping := r.next("the PING after the GOAWAY", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }).(*http2.PingFrame)
	r.get(3, "/") // on its way as the GOAWAY arrived
	r.fr.WritePing(true, ping.Data)
	for ended, final := false, false; !ended || !final; {
		f := r.next("stream 3's answer and the final GOAWAY", func(f http2.Frame) bool {
			_, ga := f.(*http2.GoAwayFrame)
			return ga || h2StreamEnd(3)(f)
		})
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if f.LastStreamID != 3 {
				t.Fatalf("final GOAWAY: last stream %d; want 3", f.LastStreamID)
			}
			final = true
		case *http2.RSTStreamFrame:
			t.Fatalf("stream 3 reset (%v) after it reached drainproxy", f.ErrCode)
		default:
			ended = true
		}
	}
	// Nothing is left on the connection: drainproxy closes it (during the delay).
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		if _, err := r.fr.ReadFrame(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after the last stream: %v; want drainproxy to close the connection", err)
			}
			break
		}
	}
	if p.FindLog("drain delay over", 0) != nil {
		t.Errorf("the connection was closed after the drain delay; want it closed once its streams were done")
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d; want 0", code)
	}
}
