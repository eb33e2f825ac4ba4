package proxy_test

// WebSocket close frames (issue 28.5): when drainproxy ends a WebSocket (Proxy.GoAway, as
// at the drain's deadline or an app restart), the client gets a close frame with 1001 and
// so does the app, masked, each only between two frames of its stream.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/proxy"
)

// wsPeer is one end of a raw WebSocket: frames are written and read byte for byte.
type wsPeer struct {
	c  net.Conn
	br *bufio.Reader
}

type wsFrameRead struct {
	opcode  byte
	masked  bool
	payload []byte
}

func (p *wsPeer) read(t *testing.T) (wsFrameRead, error) {
	t.Helper()
	p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return wsFrameRead{}, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return wsFrameRead{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return wsFrameRead{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	f := wsFrameRead{opcode: h[0] & 0x0f, masked: h[1]&0x80 != 0}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(p.br, key[:]); err != nil {
			return f, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(p.br, f.payload); err != nil {
		return f, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= key[i%4]
		}
	}
	return f, nil
}

// frame encodes a final frame with payload, masked as a client must.
func frame(opcode byte, payload []byte, masked bool) []byte {
	f := []byte{0x80 | opcode}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		f = append(f, m|byte(n))
	default:
		f = append(f, m|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	}
	if !masked {
		return append(f, payload...)
	}
	key := []byte{0x12, 0x34, 0x56, 0x78}
	f = append(f, key...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// wsPair opens a WebSocket through a proxy to a raw upstream and returns both ends.
func wsPair(t *testing.T) (*proxy.Proxy, *wsPeer, *wsPeer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	appSide := make(chan *wsPeer, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			c.Close()
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		appSide <- &wsPeer{c: c, br: br}
	}()
	up, _ := url.Parse("http://" + ln.Addr().String())
	f := startFront(t, proxy.Options{Upstream: up}, true)
	c, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	var app *wsPeer
	select {
	case app = <-appSide:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream got no upgrade")
	}
	t.Cleanup(func() { app.c.Close() })
	return f.Proxy, &wsPeer{c: c, br: br}, app
}

func expectClose(t *testing.T, who string, p *wsPeer, masked bool) {
	t.Helper()
	f, err := p.read(t)
	if err != nil {
		t.Fatalf("%s: no close frame: %v", who, err)
	}
	if f.opcode != 0x8 || len(f.payload) < 2 {
		t.Fatalf("%s: got opcode %d payload %q, want a close frame", who, f.opcode, f.payload)
	}
	if code := binary.BigEndian.Uint16(f.payload); code != proxy.CloseGoingAway {
		t.Errorf("%s: close status %d, want 1001", who, code)
	}
	if f.masked != masked {
		t.Errorf("%s: close frame masked=%v, want %v", who, f.masked, masked)
	}
}

func expectText(t *testing.T, who string, p *wsPeer, want string) {
	t.Helper()
	f, err := p.read(t)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	if f.opcode != 0x1 || string(f.payload) != want {
		t.Fatalf("%s: got opcode %d %q, want text %q", who, f.opcode, f.payload, want)
	}
}

func TestWebSocketGoAwaySendsCloseFrames(t *testing.T) {
	p, client, app := wsPair(t)
	client.c.Write(frame(0x1, []byte("hi"), true))
	expectText(t, "app", app, "hi")
	app.c.Write(frame(0x1, []byte("yo"), false))
	expectText(t, "client", client, "yo")

	done := make(chan struct{})
	go func() { defer close(done); p.GoAway() }()
	expectClose(t, "client", client, false)
	expectClose(t, "app", app, true)
	client.c.Write(frame(0x8, []byte{0x03, 0xe9}, true)) // the close handshake
	client.c.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("GoAway did not return")
	}
	if _, err := app.read(t); err == nil {
		t.Error("the app's connection is still open after GoAway")
	}
}

// A close frame never goes inside a frame: one half-sent when GoAway starts is finished
// first, in both directions.
func TestWebSocketGoAwayWaitsForTheFrameUnderWay(t *testing.T) {
	p, client, app := wsPair(t)
	big := bytes.Repeat([]byte("a"), 1000)
	toApp, toClient := frame(0x1, big, true), frame(0x1, big, false)
	client.c.Write(toApp[:300])
	app.c.Write(toClient[:300])
	time.Sleep(50 * time.Millisecond) // both halves are through the proxy by now

	done := make(chan struct{})
	go func() { defer close(done); p.GoAway() }()
	time.Sleep(50 * time.Millisecond)
	client.c.Write(toApp[300:])
	app.c.Write(toClient[300:])
	expectText(t, "app", app, string(big))
	expectClose(t, "app", app, true)
	expectText(t, "client", client, string(big))
	expectClose(t, "client", client, false)
	<-done
}

// A frame that never ends gets no close frame after its first half: the connection is
// closed with exactly the bytes the peer sent.
func TestWebSocketGoAwayNeverSplitsAFrame(t *testing.T) {
	p, client, app := wsPair(t)
	toClient := frame(0x2, bytes.Repeat([]byte("b"), 500), false)
	app.c.Write(toClient[:100])
	time.Sleep(50 * time.Millisecond)
	p.GoAway()
	client.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client.br)
	if err != nil {
		t.Fatalf("reading to the close: %v", err)
	}
	if !bytes.Equal(got, toClient[:100]) {
		t.Errorf("the client got %d bytes (%s), want exactly the 100 the app sent", len(got), fmt.Sprintf("% x", got[min(len(got), 100):]))
	}
}

// A client that reads nothing leaves the proxy's write to it blocked: GoAway must not wait
// for that write, and still closes both sides in bounded time.
func TestWebSocketGoAwayWithABlockedClient(t *testing.T) {
	p, _, app := wsPair(t)
	chunk := frame(0x2, bytes.Repeat([]byte("c"), 60000), false)
	go func() {
		for range 1000 { // far more than the socket buffers hold
			if _, err := app.c.Write(chunk); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond) // the buffers fill up
	done := make(chan struct{})
	go func() { defer close(done); p.GoAway() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("GoAway blocked behind a write to a client that reads nothing")
	}
}
