// Package testenv decides what a test does when the machine lacks something it needs
// (root, network namespaces, a Docker engine, a program from Debian's packages).
//
// On a developer's machine such a test skips with a message that says what is missing and
// how to get it. In CI (CI=true, as .ci/run runs) the same test fails instead: our CI has
// root, namespaces and Docker, so a skip there would hide a test that never ran.
package testenv

import (
	"bufio"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// InCI reports whether missing prerequisites must fail the test rather than skip it.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Unavailable skips t (or, in CI, fails it) with a message saying why it cannot run here.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing in CI (which must have it): "+format, args...)
	}
	t.Skipf(format, args...)
}

// NeedRoot calls Unavailable unless the test runs as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (%s); run the suite as root, as .ci/run does", why)
	}
}

// NeedProgram returns the path of prog, or calls Unavailable naming the Debian package
// that provides it.
func NeedProgram(t testing.TB, prog, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		Unavailable(t, "%s is not installed (apt-get install -y %s; .ci/run does it)", prog, debianPackage)
	}
	return p
}

// NeedDocker calls Unavailable unless a Docker engine answers.
func NeedDocker(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		Unavailable(t, "no docker client on PATH: these tests run real containers")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		Unavailable(t, "no Docker engine answers (docker info: %v: %s): these tests run real containers", err, out)
	}
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// FreeAddr returns a 127.0.0.1 address with a port that nothing listens on now, for a
// server that a test starts later (a child process, say). The port is below the kernel's
// ephemeral range, so no listener on port 0 and no outgoing connection takes it
// meanwhile, and this process never hands out the same one twice: on a busy machine a
// port closed a moment ago is the next one the kernel gives to a listener on port 0.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := 32768 // Linux's default start of the ephemeral range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 10000 + rand.IntN(low-10000)
		if ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use
		}
		ln.Close()
		ports[port] = true
		return ln.Addr().String()
	}
	t.Fatalf("no free port found below %d on 127.0.0.1", low)
	return ""
}

// ServeRaw accepts connections on a fresh 127.0.0.1 listener and serves each with fn on
// a goroutine of its own (the connection is closed when fn returns): a bare peer that
// writes whatever bytes a test wants, such as a broken upstream. It returns the address
// and the count of connections accepted so far. At cleanup the listener closes and
// ServeRaw waits for every fn to return.
func ServeRaw(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				fn(c, bufio.NewReader(c))
			})
		}
	})
	return ln.Addr().String(), accepted
}
