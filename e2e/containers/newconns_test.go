package containers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// newConns is a client that only opens new connections, one request each, the way a
// client or a load balancer that has not heard of the drain keeps arriving. Each
// connection ends in one of: served (200), refused (connect failed with ECONNREFUSED),
// accepted-then-reset (connected, then lost without an answer: the loss the drain must
// never cause), or other (a timeout or anything else, listed).
type newConns struct {
	name, addr string
	stop       chan struct{}
	wg         sync.WaitGroup

	served, refused, reset, other atomic.Int64

	mu         sync.Mutex
	errors     map[string]int
	refusedIn  []time.Duration // how long each refused connect took
	firstReset time.Time
}

const (
	newConnsPace    = 10 * time.Millisecond // between connections, per worker
	newConnsWorkers = 2
	newConnsMax     = 20_000 // per worker, besides the time bound
	newConnsMaxTime = 3 * time.Minute
)

func startNewConns(name, addr string) *newConns {
	n := &newConns{name: name, addr: addr, stop: make(chan struct{}), errors: map[string]int{}}
	deadline := time.Now().Add(newConnsMaxTime)
	for range newConnsWorkers {
		n.wg.Go(func() {
			for range newConnsMax {
				select {
				case <-n.stop:
					return
				default:
				}
				if time.Now().After(deadline) {
					return
				}
				n.once()
				time.Sleep(newConnsPace)
			}
		})
	}
	return n
}

func (n *newConns) once() {
	start := time.Now()
	c, err := net.DialTimeout("tcp", n.addr, 3*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			n.refused.Add(1)
			n.mu.Lock()
			n.refusedIn = append(n.refusedIn, time.Since(start))
			n.mu.Unlock()
			return
		}
		n.other.Add(1)
		n.note("dial", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: drainproxy.test\r\nConnection: close\r\n\r\n")
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
	}
	switch {
	case err == nil:
		n.served.Add(1)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		n.reset.Add(1)
		n.mu.Lock()
		if n.firstReset.IsZero() {
			n.firstReset = time.Now()
		}
		n.mu.Unlock()
		n.note("accepted-then-reset", err)
	default:
		n.other.Add(1)
		n.note("request", err)
	}
}

// note keeps a sample of what failed, for the test log.
func (n *newConns) note(kind string, err error) {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	key := kind + ": " + msg
	if _, seen := n.errors[key]; seen || len(n.errors) < 8 {
		n.errors[key]++
	}
}

func (n *newConns) finish() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	n.wg.Wait()
}

func (n *newConns) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	lat := "-"
	if len(n.refusedIn) > 0 {
		d := slices.Clone(n.refusedIn)
		slices.Sort(d)
		lat = fmt.Sprintf("median %v max %v", d[len(d)/2].Round(time.Microsecond), d[len(d)-1].Round(time.Microsecond))
	}
	return fmt.Sprintf("%s (%s): served=%d refused=%d accepted-then-reset=%d other=%d; refused connect took %s; errors %v",
		n.name, n.addr, n.served.Load(), n.refused.Load(), n.reset.Load(), n.other.Load(), lat, n.errors)
}

// check fails t on a connection accepted and then reset, or on anything but served or
// refused, and wants both: served before the listener stopped, refused after.
func (n *newConns) check(t *testing.T) {
	t.Helper()
	t.Log("new connections: " + n.String())
	if n.reset.Load() > 0 || n.other.Load() > 0 {
		t.Errorf("new connections through %s: %d accepted and then reset, %d other failures; want every one served or refused",
			n.name, n.reset.Load(), n.other.Load())
	}
	if n.served.Load() == 0 || n.refused.Load() == 0 {
		t.Errorf("new connections through %s: served %d, refused %d; want both (served before the listener stopped, refused after)",
			n.name, n.served.Load(), n.refused.Load())
	}
}

// checkDrainLog fails t when drainproxy's log shows a stop that could lose new connections:
// a listener that could not keep them out, or connections closed unserved.
func checkDrainLog(t *testing.T, logs string) {
	t.Helper()
	for _, bad := range []string{"new connections were not blocked", "without serving them"} {
		if strings.Contains(logs, bad) {
			t.Errorf("drainproxy logged %q:\n%s", bad, logs)
		}
	}
	if !strings.Contains(logs, "listener stopped") {
		t.Errorf("drainproxy did not log how its listener stopped:\n%s", logs)
	}
	if strings.Contains(logs, "drain complete") && !strings.Contains(logs, `"unserved":0`) && !strings.Contains(logs, "unserved=0") {
		t.Errorf("the drain closed connections unserved:\n%s", logs)
	}
}

// hostAddress is an IPv4 address of this host outside loopback and Docker's bridges, on
// which a port published there is reached through Docker's DNAT rules (not through
// docker-proxy, which serves 127.0.0.1); "" if there is none.
func hostAddress() string {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 ||
			strings.HasPrefix(i.Name, "docker") || strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	return ""
}

// publishedOn returns the host address that docker port lists for host ip.
func publishedOn(t *testing.T, container, port, ip string) string {
	t.Helper()
	for _, line := range strings.Split(docker(t, "port", container, port), "\n") {
		if strings.HasPrefix(line, ip+":") {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("%s is not published on %s", port, ip)
	return ""
}

// Issue 22, items 1, 2 and 7: our image as shipped (non-root, read-only, every capability
// dropped, default seccomp: the kernel refuses it the SYN filter), docker stop while clients
// keep opening new connections: from the container's network, through a port published
// on a host address (Docker's DNAT) and through one published on 127.0.0.1
// (docker-proxy). Every new connection is served or refused, never accepted and then
// reset; a connect during the wait for a slow request is refused. Through docker-proxy
// the client cannot be refused: the proxy accepts, fails to reach drainproxy, and closes;
// those are counted and shown, not failed.
func TestDockerStopNewConnections(t *testing.T) {
	im := needImages(t)
	id := "dpt-newconns-" + randomID()
	network := newNetwork(t, id)
	app := id + "-app"
	run(t, app, "--network", network, im.standin, "-listen", ":3000")
	hostIP := hostAddress()
	publish := []string{"-p", "127.0.0.1::8080"}
	if hostIP != "" {
		publish = append(publish, "-p", hostIP+"::8080")
	}
	name := id + "-proxy"
	run(t, name, append(append([]string{"--network", network, "--read-only", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges"}, publish...),
		im.proxy, "-listen", ":8080", "-admin", ":9901", "-upstream", "http://"+app+":3000",
		"-drain-delay", "2s", "-grace", "30s", "-log-format", "json", "-access-log", "off")...)
	ip := containerIP(t, name)
	waitStatus(t, "http://"+ip+":9901/readyz", 200)

	probes := []*newConns{startNewConns("the container network", ip+":8080")}
	if hostIP != "" {
		probes = append(probes, startNewConns("a port published on the host address (DNAT)", publishedOn(t, name, "8080", hostIP)))
	} else {
		t.Log("no host address outside loopback: the DNAT path is not measured")
	}
	viaProxy := startNewConns("a port published on 127.0.0.1 (docker-proxy)", publishedOn(t, name, "8080", "127.0.0.1"))
	all := append(slices.Clone(probes), viaProxy)
	defer func() {
		for _, p := range all {
			p.finish()
		}
	}()
	for _, p := range all {
		for deadline := time.Now().Add(30 * time.Second); p.served.Load() < 20; {
			if time.Now().After(deadline) {
				t.Fatalf("new connections do not get through: %s", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	slow := slowRequests(ip+":8080", 2, 5*time.Second)
	time.Sleep(200 * time.Millisecond) // the slow requests are in before the stop
	stopped := make(chan string, 1)
	go func() { out, _ := dockerErr("stop", "-t", "30", name); stopped <- out }()
	failed := collect(slow, 2)
	// drainproxy exits right after the slow requests: stop probing its address before the
	// container (and its address) is gone, where a connect would time out instead.
	for _, p := range all {
		p.finish()
	}
	<-stopped
	if len(failed) > 0 {
		t.Errorf("slow requests in flight at docker stop failed: %v", failed)
	}
	for _, p := range probes {
		p.check(t)
	}
	t.Log("new connections: " + viaProxy.String())
	if viaProxy.other.Load() > 0 {
		t.Errorf("through docker-proxy: %d connections neither served, refused nor closed by the proxy", viaProxy.other.Load())
	}
	if code := exitCode(t, name); code != "0" {
		t.Errorf("exit code after docker stop = %s, want 0", code)
	}
	logs, _ := dockerErr("logs", name)
	checkDrainLog(t, logs)
	if !strings.Contains(logs, `"method":"reuseport"`) {
		t.Errorf("without capabilities the listener should stop with the reuseport sink:\n%s", logs)
	}
}
