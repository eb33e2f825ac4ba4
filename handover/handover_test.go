package handover

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/hashicorp/go-hclog"
)

func TestEnviron(t *testing.T) {
	in := []string{"PATH=/bin", "NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=1", "WATCHDOG_PID=7", "LISTEN_PID=7",
		"LISTEN_FDS=1", "LISTEN_FDNAMES=web", "DRAINPROXY_SYSTEMD_SOCKETS=:80", "TABLEFLIP_HAS_PARENT_7DIU3=yes",
		"NOTIFY_SOCKETS=kept", "PORT=3000"}
	want := []string{"PATH=/bin", "NOTIFY_SOCKETS=kept", "PORT=3000"}
	if got := Environ(in); !slices.Equal(got, want) {
		t.Fatalf("Environ = %q, want %q", got, want)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"500000", "", 500 * time.Millisecond, false},
		{"500000", "42", 500 * time.Millisecond, false},
		{"500000", "43", 0, false}, // systemd watches another process
		{"0", "", 0, true},
		{"x", "", 0, true},
		{"500000", "x", 0, true},
	} {
		got, err := watchdogInterval(c.usec, c.pid, 42)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("watchdogInterval(%q, %q) = %v, %v; want %v, error %v", c.usec, c.pid, got, err, c.want, c.err)
		}
	}
}

func TestSameAddress(t *testing.T) {
	for _, c := range []struct {
		addr, bound string
		want        bool
	}{
		{"127.0.0.1:80", "127.0.0.1:80", true},
		{"127.0.0.1:80", "127.0.0.1:81", false},
		{":80", "0.0.0.0:80", true},
		{":80", "[::]:80", true},
		{":80", "127.0.0.1:80", false},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1:80", true},
		{"localhost:80", "127.0.0.1:80", false}, // names are not resolved
		{"web", "127.0.0.1:80", false},
	} {
		a, _ := net.ResolveTCPAddr("tcp", c.bound)
		if got := sameAddress(c.addr, a); got != c.want {
			t.Errorf("sameAddress(%q, %s) = %v, want %v", c.addr, c.bound, got, c.want)
		}
	}
}

// A process upgraded from a drainproxy that passed its state in the environment (no
// handoff pipe) reads it from there.
func TestHandoffFromOlderVersion(t *testing.T) {
	env := map[string]string{"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "300000", "WATCHDOG_PID": "1",
		envSystemdSockets: ":80\n127.0.0.1:9090\n"}
	h, err := takeHandoff(&tableflip.Fds{}, func(k string) string { return env[k] })
	if err != nil || h.NotifySocket != "/run/n" || h.WatchdogUsec != 300000 || !slices.Equal(h.SystemdSockets, []string{":80", "127.0.0.1:9090"}) {
		t.Fatalf("takeHandoff = %+v, %v", h, err)
	}
}

// Every notification is one datagram of the lines sd_notify(3) names; none once an
// upgrade handed the service over, and none without a socket.
func TestNotifier(t *testing.T) {
	n := newNotifySocket(t)
	no := &Notifier{log: hclog.NewNullLogger(), pid: 42, socket: n.path}
	no.Ready("serving")
	n.await(t, "READY=1", "STATUS=serving")
	no.Reloading()
	if m := n.await(t, "RELOADING=1", "STATUS=reloading the configuration"); !strings.Contains(m, "\nMONOTONIC_USEC=") {
		t.Errorf("reloading without MONOTONIC_USEC: %q", m)
	}
	no.readyAfterUpgrade("serving (upgraded)")
	n.await(t, "MAINPID=42", "READY=1", "STATUS=serving (upgraded)")
	no.Status("busy")
	n.await(t, "STATUS=busy")
	no.quiet.Store(true)
	no.Stopping("draining")
	no.quiet.Store(false)
	no.Stopping("draining")
	if m := n.await(t, "STATUS=draining: draining"); m != "STOPPING=1\nSTATUS=draining: draining" {
		t.Errorf("stopping = %q", m)
	}
	select {
	case m := <-n.msgs:
		t.Errorf("unexpected notification %q (a quiet notifier sent it?)", m)
	case <-time.After(100 * time.Millisecond):
	}
	var silent *Notifier
	silent.Ready("x") // a nil Notifier does nothing
	(&Notifier{log: hclog.NewNullLogger()}).Ready("x")
}

// An upgrade waits for Ready, never starts once a drain has begun, and is refused by a
// second Handover in the process (tableflip allows one upgrader per process); each
// refusal leaves the process as it was.
func TestUpgradeRefusals(t *testing.T) {
	h := New(Options{Getenv: func(string) string { return "" }})
	defer h.Stop()
	if h.Upgraded() || h.tf == nil {
		t.Fatalf("a Handover in the test process: upgraded %v, tableflip error %v", h.Upgraded(), h.tfErr)
	}
	if err := h.Upgrade(); err == nil || err.Error() != "not ready yet" {
		t.Errorf("Upgrade before Ready = %v, want not ready yet", err)
	}
	d := &testDrainer{requested: make(chan struct{})}
	h.Ready(d, nil)
	d.Drain("SIGTERM")
	if err := h.Upgrade(); err == nil || err.Error() != "the drain has begun" {
		t.Errorf("Upgrade during a drain = %v, want the drain has begun", err)
	}
	second := New(Options{Getenv: func(string) string { return "" }})
	defer second.Stop()
	second.Ready(&testDrainer{requested: make(chan struct{})}, nil)
	if err := second.Upgrade(); err == nil || !strings.Contains(err.Error(), "cannot upgrade on this system") {
		t.Errorf("Upgrade of a second Handover = %v, want cannot upgrade on this system", err)
	}
	ln, err := second.Listen(t.Context(), "127.0.0.1:0", "", 0) // sockets still work
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// A held listener accepts nothing until released (connections wait in the kernel's
// queue), and Close ends a held Accept.
func TestHold(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	held := Hold(ln, release)
	accepted := make(chan error, 1)
	go func() {
		c, err := held.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String()) // queued by the kernel
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-accepted:
		t.Fatalf("Accept returned before the release: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-accepted; err != nil {
		t.Fatalf("Accept after the release: %v", err)
	}

	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held2 := Hold(ln2, make(chan struct{}))
	go func() { _, err := held2.Accept(); accepted <- err }()
	held2.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept of a held listener closed = %v, want net.ErrClosed", err)
	}
}
