//go:build linux

package drain

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"github.com/drainproxy/drainproxy/listener"
)

// TestReadTCPInfoThroughWrappers: the idle window needs the RTT of connections as
// http.Server sees them: plain, wrapped by max_connections' limit listener, or TLS.
func TestReadTCPInfoThroughWrappers(t *testing.T) {
	limited, err := listener.Listen(context.Background(), "127.0.0.1:0", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer limited.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := limited.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", limited.Addr().String())
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
