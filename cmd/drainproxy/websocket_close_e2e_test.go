package main

// Issue 28.5: a WebSocket that drainproxy closes (the drain's deadline, an app restart)
// gets a close frame with status 1001 (going away) before the TCP close: to the client,
// and to the app while its side is open (masked, as a client's frames must be).

import (
	"bufio"
	wsbin "encoding/binary"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// rawWS is a WebSocket client that reads frames as they come (a close frame included).
type rawWS struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRawWS(t *testing.T, addr string) *rawWS {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: drain.test\r\nOrigin: http://drain.test/\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket upgrade: %v %v", res, err)
	}
	return &rawWS{c: c, br: br}
}

// readWSFrame reads one frame (unmasking it) from br.
func readWSFrame(br *bufio.Reader) (opcode byte, masked bool, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return
	}
	opcode, masked = h[0]&0x0f, h[1]&0x80 != 0
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(br, b[:]); err != nil {
			return
		}
		n = uint64(wsbin.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(br, b[:]); err != nil {
			return
		}
		n = wsbin.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if masked {
		if _, err = io.ReadFull(br, key[:]); err != nil {
			return
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(br, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return
}

// send writes one masked text frame.
func (w *rawWS) send(t *testing.T, msg string) {
	t.Helper()
	key := [4]byte{1, 2, 3, 4}
	f := append([]byte{0x81, 0x80 | byte(len(msg))}, key[:]...)
	for i := range len(msg) {
		f = append(f, msg[i]^key[i%4])
	}
	if _, err := w.c.Write(f); err != nil {
		t.Fatal(err)
	}
}

// closeStatus reads frames until a close frame and returns its status; it fails the test
// if the connection ends first (what a client reports as 1006).
func (w *rawWS) closeStatus(t *testing.T, within time.Duration) int {
	t.Helper()
	w.c.SetReadDeadline(time.Now().Add(within))
	for {
		op, _, payload, err := readWSFrame(w.br)
		if err != nil {
			t.Fatalf("the WebSocket ended without a close frame (a client sees 1006): %v", err)
		}
		if op == 0x8 {
			if len(payload) < 2 {
				return 1005
			}
			return int(wsbin.BigEndian.Uint16(payload))
		}
	}
}

// wsUpstream is an app with a WebSocket at /ws that echoes text and reports the close
// frame it receives (status, masked) on closes.
type wsClose struct {
	status int
	masked bool
}

func wsUpstream(t *testing.T) (addr string, closes <-chan wsClose) {
	ch := make(chan wsClose, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		for {
			op, masked, payload, err := readWSFrame(brw.Reader)
			if err != nil {
				return
			}
			if op == 0x8 {
				st := 1005
				if len(payload) >= 2 {
					st = int(wsbin.BigEndian.Uint16(payload))
				}
				ch <- wsClose{st, masked}
				c.Write([]byte{0x88, 2, byte(st >> 8), byte(st)}) // the close handshake
				return
			}
			if op == 0x1 {
				c.Write(append([]byte{0x81, byte(len(payload))}, payload...))
			}
		}
	})
	return serveUpstream(t, h), ch
}

func (w *rawWS) echo(t *testing.T, msg string) {
	t.Helper()
	w.send(t, msg)
	w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	op, _, payload, err := readWSFrame(w.br)
	if err != nil || op != 0x1 || string(payload) != msg {
		t.Fatalf("echo of %q: opcode %d %q %v", msg, op, payload, err)
	}
}

func TestWebSocketGetsGoingAwayAtTheDeadline(t *testing.T) {
	up, closes := wsUpstream(t)
	p := startProxy(t, "-upstream", "http://"+up, "-grace", "1s")
	ws := dialRawWS(t, p.Addr)
	ws.echo(t, "before")
	p.Signal(syscall.SIGTERM)
	if st := ws.closeStatus(t, 10*time.Second); st != 1001 {
		t.Errorf("the client's close frame says %d, want 1001", st)
	}
	select {
	case c := <-closes:
		if c.status != 1001 || !c.masked {
			t.Errorf("the app got close status %d (masked %v), want 1001, masked", c.status, c.masked)
		}
	case <-time.After(5 * time.Second):
		t.Error("the app got no close frame")
	}
	if code := p.Wait(10 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1 (a WebSocket was cut at the deadline)", code)
	}
}

// At an app restart whose grace runs out, the WebSockets on the old instance are closed
// with 1001 before the instance is stopped.
func TestWebSocketGetsGoingAwayAtAppRestart(t *testing.T) {
	standinBin, _ := supApps(t)
	p := startProxy(t, supArgs([]string{"-grace", "1s"}, supPort(t), standinBin)...)
	first := supAppPid(t, p)
	supKillOnCleanup(t, first)
	ws := dialRawWS(t, p.Addr)
	ws.echo(t, "before")
	p.Signal(syscall.SIGHUP)
	next := restartLogPid(t, p, "app restart: switched", "pid", 20*time.Second)
	supKillOnCleanup(t, next)
	if st := ws.closeStatus(t, 10*time.Second); st != 1001 {
		t.Errorf("the client's close frame says %d, want 1001", st)
	}
	p.WaitLog("app restart: old instance stopped", 20*time.Second)
	restartStopAndCheck(t, p, next)
}
