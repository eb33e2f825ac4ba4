package h2serve

import (
	"crypto/tls"
	"net"
	"reflect"
	"syscall"

	"golang.org/x/sys/unix"
)

// unreadBytes is how many bytes the kernel holds for c that nobody has read yet
// (SIOCINQ), or 0 when that cannot be told.
func unreadBytes(c net.Conn) int {
	sc, ok := socketOf(c)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	if err != nil {
		return 0
	}
	return n
}

// socketOf finds the socket under c: through TLS, and through wrappers that embed the
// connection they wrap as a field Conn (x/net/netutil's LimitListener does, with an
// unexported type, hence reflection).
func socketOf(c net.Conn) (syscall.Conn, bool) {
	for range 4 {
		switch x := c.(type) {
		case syscall.Conn:
			return x, true
		case *tls.Conn:
			c = x.NetConn()
			continue
		}
		v := reflect.ValueOf(c)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return nil, false
		}
		f := v.FieldByName("Conn")
		if !f.IsValid() || !f.CanInterface() {
			return nil, false
		}
		inner, ok := f.Interface().(net.Conn)
		if !ok || inner == nil {
			return nil, false
		}
		c = inner
	}
	return nil, false
}
