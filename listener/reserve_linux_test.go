//go:build linux

package listener

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// Out of descriptors, Accept closes the clients waiting in the accept queue at once, on
// the spare descriptor it keeps for that, instead of leaving them to wait for as long as
// the shortage lasts; then it fails as accept(2) did (net/http backs off and tries again).
// The test lowers this process's own open-files limit (no test in this package runs in
// parallel with it).
func TestOutOfDescriptorsClosesWaitingClientsAtOnce(t *testing.T) {
	l, err := Listen(context.Background(), "127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	waitQueue(t, l, 3)

	// Take every descriptor left under a limit a little above what is open now.
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	low := was
	low.Cur = uint64(len(entries) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []int
	defer func() {
		for _, fd := range fillers {
			syscall.Close(fd)
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &was)
	}()
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fillers = append(fillers, fd)
	}

	_, err = l.Accept()
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("Accept with no descriptor left: %v, want EMFILE", err)
	}
	if n := l.RefusedForDescriptors(); n != 3 {
		t.Errorf("RefusedForDescriptors = %d, want 3 (every client waiting)", n)
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d read %v, want its connection closed at once (EOF or reset)", i, err)
		}
	}
}
