package drain

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"
)

// get sends one GET on a raw keep-alive connection and reads the response.
func get(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, error) {
	t.Helper()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// TestIdleAtSignalGetsTheWholeWindow: a keep-alive connection that has been idle longer
// than the idle window when the drain starts is not closed at once (that races the
// client's next request, exactly http.Server.Shutdown's flaw): its window starts at the
// signal, so a request it sends right after the listeners closed is answered, with
// Connection: close.
func TestIdleAtSignalGetsTheWholeWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	d := New(Options{IdleClose: window})
	addr, done := serve(t, d, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	waitUntil(t, d.Ready)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := get(t, c, br); err != nil {
		t.Fatal(err)
	}
	time.Sleep(window + 100*time.Millisecond) // the condition under test: idle past the window
	d.Drain("test")
	waitUntil(t, func() bool { return d.Phase() >= PhaseStopping })
	resp, err := get(t, c, br)
	if err != nil {
		t.Fatalf("request on a connection idle at the signal: %v (closed at once instead of after the window)", err)
	}
	if !resp.Close {
		t.Fatal("response during the drain lacks Connection: close")
	}
	if sum := <-done; sum.ExitCode() != 0 {
		t.Fatalf("summary %+v", sum)
	}
}

// TestIdleConnectionClosedAfterWindow: a connection that stays idle is closed once its
// window is over, so it does not hold the drain until the grace period.
func TestIdleConnectionClosedAfterWindow(t *testing.T) {
	const window = 200 * time.Millisecond
	d := New(Options{IdleClose: window, Grace: time.Minute})
	addr, done := serve(t, d, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	waitUntil(t, d.Ready)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := get(t, c, br); err != nil {
		t.Fatal(err)
	}
	d.Drain("test")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read data on an idle connection, want the server's close")
	}
	sum := <-done
	if sum.ExitCode() != 0 || sum.Took >= time.Minute {
		t.Fatalf("summary %+v, want a clean drain well before the grace period", sum)
	}
}

func TestRTTMargin(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		info tcpInfo
		want time.Duration
	}{
		{"unknown", tcpInfo{}, fallbackRTTMargin},
		{"loopback", tcpInfo{ok: true, rtt: 30 * time.Microsecond, rttVar: 10 * time.Microsecond, rto: 200 * time.Millisecond}, 200*time.Millisecond + 30*time.Microsecond},
		{"150ms path", tcpInfo{ok: true, rtt: 150 * time.Millisecond, rttVar: 40 * time.Millisecond, rto: 350 * time.Millisecond}, 500 * time.Millisecond},
		{"no rto", tcpInfo{ok: true, rtt: 150 * time.Millisecond, rttVar: 40 * time.Millisecond}, 310 * time.Millisecond},
	} {
		if got := tc.info.margin(false); got != tc.want {
			t.Errorf("%s: margin %v, want %v", tc.name, got, tc.want)
		}
	}
	if got, want := (tcpInfo{ok: true, rtt: 50 * time.Millisecond, rto: 250 * time.Millisecond}).margin(true), 50*time.Millisecond+synFallbackRTO; got != want {
		t.Errorf("handshake retransmitted: margin %v, want %v", got, want)
	}
	idle := now.Add(-time.Second)
	if (tcpInfo{ok: true, readAt: now, lastDataRecv: 2 * time.Second}).receivedSince(idle) {
		t.Error("data 2s ago counted as received after a connection idle for 1s")
	}
	if !(tcpInfo{ok: true, readAt: now, lastDataRecv: 100 * time.Millisecond}).receivedSince(idle) {
		t.Error("data 100ms ago not counted as received after a connection idle for 1s")
	}
}
