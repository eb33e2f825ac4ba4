//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/netrig"
)

// TestRTTTLSDrain is the round-trip drain (issue 14) through the TLS front door: the same
// raw, never-retrying clients, 150 ms away, each connection opened with a TLS 1.3
// handshake to a static certificate. A handshake adds a round trip between the accept and
// the first request, so a connection is accepted (and its TCP handshake is over) a whole
// RTT before drainproxy sees a request on it: the drain must count it from the accept.
// A failed handshake on an accepted connection counts as a lost request.
func TestRTTTLSDrain(t *testing.T) {
	rttSuite(t, "tls-", rttTLSDrain)
}

func rttTLSDrain(t *testing.T, link rttLink, delay time.Duration, l rttLoad) rttRun {
	t.Helper()
	ca := tlsNewCA(t, "drainproxy rtt CA")
	certFile, keyFile := ca.issue(t, t.TempDir(), 100, netrig.ServerIP)
	cfg := &tls.Config{RootCAs: ca.Pool, ServerName: netrig.ServerIP, MinVersion: tls.VersionTLS13}
	l.wrap = func(ctx context.Context, c net.Conn) (net.Conn, error) {
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return tc, tc.HandshakeContext(hctx)
	}
	return rttDrainThrough(t, link, l, func(rig *netrig.Rig, upstream string) *proc {
		conf := tlsConfigFile(t, `
listener {
  address = "%s:0"
  tls {
    cert_file = %q
    key_file  = %q
  }
}
upstream { url = %q }
admin { address = "127.0.0.1:0" }
drain {
  delay = %q
  grace = "30s"
}
`, netrig.ServerIP, certFile, keyFile, upstream, delay.String())
		var p *proc
		if err := rig.Do(rig.Server, func() error {
			p = launch(t, "-config", conf, "-access-log", "off", "-log-level", "info")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		p.WaitLog("ready", 30*time.Second)
		return p
	})
}
