//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/netrig"
	"github.com/drainproxy/drainproxy/internal/testenv"
)

// Issue 22, item 1: once the drain has stopped accepting, a new connect is refused at
// once, while a slow request keeps the process in its wait for 5 s. Before, the copy of
// the socket kept for upgrades left it listening (with the SYN filter dropping SYNs), and
// a client hung until the process exited. On the host (127.0.0.1) and in a network
// namespace behind a 20 ms link; with the SYN filter (root) and without it (no
// capabilities, as in our image), where a reuseport sink takes the new SYNs instead.
//
// The claim is "within 10 ms" of the server; the test asserts the refusal (never a
// timeout or a hang) and logs the latency: wall-clock bounds are for measurements, not for
// a loaded test machine.
func TestNewConnectionsRefusedDuringTheWait(t *testing.T) {
	testenv.NeedRoot(t, "the SYN filter needs CAP_NET_ADMIN; the reuseport case drops it with setpriv")
	for _, method := range []string{"syn-filter", "reuseport"} {
		t.Run("host/"+method, func(t *testing.T) {
			app, arrived := slowApp(t)
			up := serveUpstream(t, app)
			p := launchWith(t, launchOptions{noCaps: method == "reuseport"},
				"-upstream", "http://"+up, "-drain-delay", "0", "-grace", "30s", "-access-log", "off")
			p.WaitLog("ready", 20*time.Second)
			var d net.Dialer
			refusedDuringWait(t, p, method, arrived, d.DialContext, 0)
		})
		t.Run("netns/"+method, func(t *testing.T) {
			const rtt = 20 * time.Millisecond
			rig := netrig.New(t, netrig.Options{RTT: rtt})
			app, arrived := slowApp(t)
			ln := rttAppListener(t, rig)
			srv := &http.Server{Handler: app}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			var p *proc
			if err := rig.Do(rig.Server, func() error {
				p = launchWith(t, launchOptions{noCaps: method == "reuseport"},
					"-listen", netrig.ServerIP+":0", "-upstream", "http://"+ln.Addr().String(),
					"-drain-delay", "0", "-grace", "30s", "-access-log", "off")
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			p.WaitLog("ready", 30*time.Second)
			dial := func(ctx context.Context, _, addr string) (net.Conn, error) { return rig.Dial(ctx, addr) }
			refusedDuringWait(t, p, method, arrived, dial, rtt)
		})
	}
}

// slowApp answers /slow after 5 s, telling arrived when a request is in.
func slowApp(t *testing.T) (http.Handler, <-chan struct{}) {
	arrived := make(chan struct{}, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow answer")
	}), arrived
}

// refusedDuringWait holds p in its wait with a 5 s request, signals it, and dials it 20
// times once it has stopped accepting: every dial must be refused.
func refusedDuringWait(t *testing.T, p *proc, method string, arrived <-chan struct{},
	dial func(ctx context.Context, network, addr string) (net.Conn, error), rtt time.Duration) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 20 * time.Second}
	slow := make(chan error, 1)
	go func() {
		resp, err := client.Get(p.URL() + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		slow <- err
	}()
	select {
	case <-arrived:
	case err := <-slow:
		t.Fatalf("the slow request ended before the drain: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the app")
	}
	p.Signal(syscall.SIGTERM)
	p.WaitLog("stopped accepting", 10*time.Second)
	if l := p.FindLog("listener stopped", time.Second); l == nil || l["method"] != method {
		t.Errorf(`"listener stopped" line %v: want method %q`, l, method)
	}
	var took []time.Duration
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		c, err := dial(ctx, "tcp", p.Addr)
		d := time.Since(start)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("a connect during the wait succeeded after %v; want refused", d)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("a connect during the wait failed after %v with %v; want connection refused", d, err)
		}
		took = append(took, d)
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(took)
	t.Logf("%s: 20 connects during the wait refused; latency median %v, max %v (link round trip %v)",
		method, took[len(took)/2], took[len(took)-1], rtt)
	if err := <-slow; err != nil {
		t.Errorf("the slow request: %v; want its answer", err)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if sum := p.FindLog("drain complete", time.Second); sum == nil || sum["unserved"] != float64(0) {
		t.Errorf("drain complete %v: want unserved=0", sum)
	}
}
