//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/netrig"
	"github.com/drainproxy/drainproxy/standin"
)

// TestRTTTLSDrain is the round-trip drain (issue 14) through the TLS front door: the same
// raw, never-retrying clients, 150 ms away, each connection opened with a TLS 1.3
// handshake to a static certificate. A handshake adds a round trip between the accept and
// the first request, so a connection is accepted (and its TCP handshake is over) a whole
// RTT before drainproxy sees a request on it: the drain must count it from the accept.
// A failed handshake on an accepted connection counts as a lost request.
func TestRTTTLSDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("round-trip drain runs take a minute")
	}
	link := rttLinks[1]
	for _, delay := range []time.Duration{0, time.Second} {
		for _, name := range []string{"new-conn", "paced-400ms", "think-0-1s"} {
			t.Run(fmt.Sprintf("%s/delay=%v/tls-%s", link.name, delay, name), func(t *testing.T) {
				r := rttTLSDrain(t, link, delay, rttLoadNamed(name))
				t.Log(r)
				if r.exitCode != 0 || r.lost != 0 || r.bad != 0 || r.answered == 0 {
					t.Fatalf("%s", r)
				}
			})
		}
	}
}

func rttTLSDrain(t *testing.T, link rttLink, delay time.Duration, l rttLoad) rttRun {
	t.Helper()
	rig := netrig.New(t, link.opts)
	ln := rttAppListener(t, rig)
	app := &http.Server{Handler: standin.Handler()}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })

	ca := tlsNewCA(t, "drainproxy rtt CA")
	certFile, keyFile := ca.issue(t, t.TempDir(), 100, netrig.ServerIP)
	conf := tlsConfigFile(t, `
listener {
  address = "%s:0"
  tls {
    cert_file = %q
    key_file  = %q
  }
}
upstream { url = "http://%s" }
admin { address = "127.0.0.1:0" }
drain {
  delay = %q
  grace = "30s"
}
`, netrig.ServerIP, certFile, keyFile, ln.Addr(), delay.String())
	var p *proc
	if err := rig.Do(rig.Server, func() error {
		p = launch(t, "-config", conf, "-access-log", "off", "-log-level", "info")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.WaitLog("ready", 30*time.Second)

	cfg := &tls.Config{RootCAs: ca.Pool, ServerName: netrig.ServerIP, MinVersion: tls.VersionTLS13}
	l.wrap = func(ctx context.Context, c net.Conn) (net.Conn, error) {
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return tc, tc.HandshakeContext(hctx)
	}
	res, code := rttLoadThenSignal(rig, link.opts.RTT, p.Addr, l, func() int {
		p.Signal(syscall.SIGTERM)
		return p.Wait(60 * time.Second)
	})
	return rttResult(t, p, res, code, link.opts.RTT)
}
