//go:build linux

package drain

import (
	"crypto/tls"
	"net"
	"testing"

	"golang.org/x/net/netutil"
)

// TestReadTCPInfoThroughWrappers: the idle window needs the RTT of connections as
// http.Server sees them: plain, wrapped by max_connections' limit listener, or TLS.
func TestReadTCPInfoThroughWrappers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limited := netutil.LimitListener(ln, 10)
	defer limited.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := limited.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	for name, conn := range map[string]net.Conn{
		"plain":         c,
		"limited":       sc,
		"TLS (limited)": tls.Server(sc, &tls.Config{}),
	} {
		if info := readTCPInfo(conn); !info.ok || info.rtt <= 0 {
			t.Errorf("%s (%T): TCP_INFO %+v, want the connection's RTT", name, conn, info)
		}
	}
}
