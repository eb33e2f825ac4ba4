// Command soak runs drainproxy as an operator would, in supervised mode in front of the
// stand-in app, under a mixed load and the faults of production life on a schedule, and
// fails on anything lost. scripts/soak builds the binaries, runs this and plots the CSV.
//
// Load (bounded, loopback only): HTTP/1.1 keep-alive and new-connection GETs, h2c and TLS
// h2 requests, POST bodies up to 256 KiB echoed back and compared byte for byte, /slow and
// /stream responses, and WebSockets that echo and close themselves. Every request carries
// ?id=N, so that each access-log line is matched to a request.
//
// Faults: SIGHUP with a changed valid configuration (which rebuilds the proxy and restarts
// the app), SIGHUP with a broken one (twice), POST /restart, SIGUSR2 (an upgrade), and one
// SIGKILL of the app. Only the SIGKILL has a documented window in which requests may fail:
// from the kill until the app answers again.
//
// Every 10 s it samples drainproxy's RSS, goroutines, open fds and threads. It fails on: a
// failed request or WebSocket, or a /readyz answer other than 200, outside the SIGKILL
// window; a wrong body; an access-log line missing or invalid; growth within a process
// generation or across the run (first window against last); a final drain that is not
// clean.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const hello = "Hello, world\n" // standin.Hello

type options struct {
	duration              time.Duration
	drainproxy, standin   string
	dir                   string
	hup, restart, upgrade time.Duration
	kill                  time.Duration // when the app is killed (from the start)
	broken                []time.Duration
	websockets            int
	pause                 time.Duration
	window                time.Duration // growth is compared over the first and last window
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "d", 90*time.Second, "how long the load runs")
	flag.StringVar(&o.drainproxy, "drainproxy", "", "the drainproxy binary")
	flag.StringVar(&o.standin, "standin", "", "the stand-in app binary")
	flag.StringVar(&o.dir, "dir", "", "where the config, logs and soak.csv go")
	flag.IntVar(&o.websockets, "websockets", 20, "WebSockets open at a time")
	flag.DurationVar(&o.pause, "pause", 10*time.Millisecond, "pause between one client's requests (1-2x this): the load's rate")
	flag.Parse()
	if o.drainproxy == "" || o.standin == "" || o.dir == "" {
		fmt.Fprintln(os.Stderr, "soak: -drainproxy, -standin and -dir are required (scripts/soak sets them)")
		os.Exit(2)
	}
	o.schedule()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "soak: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("soak: PASS")
}

// schedule sets the faults: the periods for a long run, shorter ones for a short
// run, so that the 90-second version still goes through each fault.
func (o *options) schedule() {
	d := o.duration
	o.hup, o.restart, o.upgrade, o.window = 60*time.Second, 90*time.Second, 5*time.Minute, 5*time.Minute
	if d < 10*time.Minute {
		o.hup, o.restart, o.upgrade, o.window = d/5, d/4, d/2, d/4
	}
	o.kill = d * 7 / 10
	o.broken = []time.Duration{d/3 + d/20, d*2/3 + d/20}
}

// tally counts outcomes; failures remembers each failure's time and what it was.
type tally struct {
	ok, wrongBody atomic.Int64
	mu            sync.Mutex
	failures      []failure
	sent          map[string]bool // request ids sent
	completed     map[string]bool // request ids answered 200 with the right body
}

type failure struct {
	at   time.Time
	what string
}

func (t *tally) send(id string) {
	t.mu.Lock()
	t.sent[id] = true
	t.mu.Unlock()
}

func (t *tally) done(id string) {
	t.ok.Add(1)
	t.mu.Lock()
	t.completed[id] = true
	t.mu.Unlock()
}

func (t *tally) fail(what string) {
	t.mu.Lock()
	t.failures = append(t.failures, failure{time.Now(), what})
	t.mu.Unlock()
}

func (t *tally) wrong(what string) {
	t.wrongBody.Add(1)
	t.fail("wrong body: " + what)
}

type soak struct {
	o       options
	t       *tally
	ids     atomic.Int64
	plain   string // the plain listener, host:port (HTTP/1.1 and h2c)
	secure  string // the TLS listener
	admin   string
	cfgPath string
	stop    chan struct{}

	appPort, cert, key, accessLog string
	variant                       bool // which of the two valid configurations is in the file

	windowsMu sync.Mutex
	windows   [][2]time.Time // documented windows: failures inside do not count
}

func (s *soak) nextID() string { return strconv.FormatInt(s.ids.Add(1), 10) }

func run(o options) error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become a subreaper (to reap the process an upgrade starts): %w", err)
	}
	s := &soak{o: o, t: &tally{sent: map[string]bool{}, completed: map[string]bool{}}, stop: make(chan struct{})}
	if err := s.setUp(); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(o.dir, "drainproxy.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(o.drainproxy, "-config", s.cfgPath, "-log-format", "json")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	firstExit := make(chan int, 1)
	go func() { // the first generation; later ones (children of the first) are reaped by pid
		cmd.Wait()
		firstExit <- cmd.ProcessState.ExitCode()
	}()
	defer func() {
		if pid := s.pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if err := s.waitReady(60 * time.Second); err != nil {
		return err
	}
	start := time.Now()
	fmt.Printf("soak: drainproxy pid %d ready; running %s (HUP every %s, restart every %s, upgrade every %s, kill at %s, broken configs at %v)\n",
		cmd.Process.Pid, o.duration, o.hup, o.restart, o.upgrade, o.kill, o.broken)

	var load sync.WaitGroup
	s.startLoad(&load)
	load.Go(s.watchReadiness)
	samples := make(chan []sample, 1)
	stopSampling := make(chan struct{})
	go func() { samples <- s.sample(start, stopSampling) }()
	for _, f := range s.faults() {
		if d := time.Until(start.Add(f.at)); d > 0 {
			time.Sleep(d)
		}
		fmt.Printf("soak: %6.1fs %s\n", time.Since(start).Seconds(), f.name)
		if err := s.inject(f.name); err != nil {
			return err
		}
	}
	if d := time.Until(start.Add(o.duration)); d > 0 {
		time.Sleep(d)
	}
	close(s.stop)
	load.Wait()
	close(stopSampling)
	got := <-samples

	// The final drain: nothing is in flight any more; it must be clean.
	pid := s.pid()
	fmt.Printf("soak: %6.1fs SIGTERM to %d (final drain)\n", time.Since(start).Seconds(), pid)
	syscall.Kill(pid, syscall.SIGTERM)
	code, err := waitExit(pid, cmd.Process.Pid, firstExit, 90*time.Second)
	if err != nil {
		return err
	}
	var problems []string
	if code != 0 {
		problems = append(problems, fmt.Sprintf("the final drain exited %d, want 0", code))
	}
	if err := writeCSV(filepath.Join(o.dir, "soak.csv"), got); err != nil {
		return err
	}
	problems = append(problems, s.checkFailures()...)
	problems = append(problems, s.checkAccessLog(s.accessLog)...)
	problems = append(problems, checkGrowth(got, o.window)...)
	problems = append(problems, checkLog(filepath.Join(o.dir, "drainproxy.log"))...)
	fmt.Printf("soak: %d requests answered 200 with the right body; %d wrong bodies; %d failures in all\n",
		s.t.ok.Load(), s.t.wrongBody.Load(), len(s.t.failures))
	summarize(got)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n  "))
	}
	return nil
}

// setUp picks the ports, makes the TLS certificate and writes the configuration.
func (s *soak) setUp() error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	s.plain, s.secure, s.admin, s.appPort = "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1], "127.0.0.1:"+ports[2], ports[3]
	if s.cert, s.key, err = selfSigned(s.o.dir); err != nil {
		return err
	}
	s.cfgPath = filepath.Join(s.o.dir, "dp.hcl")
	s.accessLog = filepath.Join(s.o.dir, "access.log")
	os.Remove(s.accessLog)
	return s.writeConfig()
}

// writeConfig writes the configuration; upstream.read_timeout is 60s or 61s as
// s.variant says, so that flipping it makes a reload build a new proxy.
func (s *soak) writeConfig() error {
	readTimeout := "60s"
	if s.variant {
		readTimeout = "61s"
	}
	config := fmt.Sprintf(`listener {
  address = %q
}
listener {
  address = %q
  tls {
    cert_file = %q
    key_file  = %q
  }
}
admin {
  address = %q
}
upstream {
  url = "http://127.0.0.1:%s"
  command = [%q]
  read_timeout = %q
}
app {
  restart = "on-failure"
}
drain {
  grace = "30s"
}
log {
  access_log = %q
}
`, s.plain, s.secure, s.cert, s.key, s.admin, s.appPort, s.o.standin, readTimeout, s.accessLog)
	return os.WriteFile(s.cfgPath, []byte(config), 0o644)
}

// inject applies one fault.
func (s *soak) inject(name string) error {
	switch name {
	case "SIGHUP (changed config)":
		s.variant = !s.variant
		if err := s.writeConfig(); err != nil {
			return err
		}
		s.signal(syscall.SIGHUP)
	case "SIGHUP (broken config)":
		if err := os.WriteFile(s.cfgPath, []byte("upstream {\n  read_timeout = \"soon\"\n}\n"), 0o644); err != nil {
			return err
		}
		s.signal(syscall.SIGHUP)
		time.Sleep(2 * time.Second)
		return s.writeConfig()
	case "POST /restart":
		if resp, err := http.Post("http://"+s.admin+"/restart", "", nil); err == nil {
			resp.Body.Close()
		}
	case "SIGUSR2 (upgrade)":
		before := s.pid()
		s.signal(syscall.SIGUSR2)
		deadline := time.Now().Add(90 * time.Second)
		for s.pid() == before && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if s.pid() == before {
			return fmt.Errorf("the upgrade did not take over within 90s")
		}
	case "SIGKILL of the app":
		s.killApp()
	}
	return nil
}

type fault struct {
	at   time.Duration
	name string
}

func (s *soak) faults() []fault {
	o := s.o
	var fs []fault
	for at := o.hup; at < o.duration; at += o.hup {
		fs = append(fs, fault{at, "SIGHUP (changed config)"})
	}
	for at := o.restart; at < o.duration; at += o.restart {
		fs = append(fs, fault{at + 5*time.Second, "POST /restart"})
	}
	for at := o.upgrade; at < o.duration; at += o.upgrade {
		fs = append(fs, fault{at + 10*time.Second, "SIGUSR2 (upgrade)"})
	}
	for _, at := range o.broken {
		fs = append(fs, fault{at, "SIGHUP (broken config)"})
	}
	fs = append(fs, fault{o.kill, "SIGKILL of the app"})
	slices.SortFunc(fs, func(a, b fault) int { return int(a.at - b.at) })
	// Faults closer than 3 s apart would coalesce (SIGHUP) or be refused (a restart in
	// progress): spread them.
	for i := 1; i < len(fs); i++ {
		if fs[i].at < fs[i-1].at+3*time.Second {
			fs[i].at = fs[i-1].at + 3*time.Second
		}
	}
	return slices.DeleteFunc(fs, func(f fault) bool { return f.at >= o.duration })
}

// status is drainproxy's /status, as far as the soak reads it.
func (s *soak) status() (pid int, ready bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.admin + "/status")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var st struct {
		PID   int  `json:"pid"`
		Ready bool `json:"ready"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0, false
	}
	return st.PID, st.Ready
}

func (s *soak) pid() int {
	for range 20 {
		if pid, ready := s.status(); pid > 0 && ready {
			return pid
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid, _ := s.status()
	return pid
}

func (s *soak) signal(sig syscall.Signal) {
	if pid := s.pid(); pid > 0 {
		syscall.Kill(pid, sig)
	}
}

func (s *soak) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, ready := s.status(); ready {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("drainproxy not ready within %s (see %s)", within, filepath.Join(s.o.dir, "drainproxy.log"))
}

// killApp sends SIGKILL to the app under the serving drainproxy, and records the window
// until the app answers again and /readyz says 200 (plus a second) as documented.
func (s *soak) killApp() {
	begin := time.Now()
	app := childOf(s.pid(), filepath.Base(s.o.standin))
	if app == 0 {
		fmt.Println("soak: no app process found to kill")
		return
	}
	syscall.Kill(app, syscall.SIGKILL)
	c := http.Client{Timeout: 2 * time.Second}
	ok := func(url string) bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	// The app answers again once restarted; /readyz follows after health_check's
	// healthy_threshold checks (2, 5 s apart by default).
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && !(ok("http://"+s.plain+"/") && ok("http://"+s.admin+"/readyz")) {
		time.Sleep(50 * time.Millisecond)
	}
	end := time.Now().Add(time.Second)
	s.windowsMu.Lock()
	s.windows = append(s.windows, [2]time.Time{begin, end})
	s.windowsMu.Unlock()
	fmt.Printf("soak: app pid %d killed; answering again, and ready, after %s\n", app, time.Since(begin).Round(time.Millisecond))
}

// childOf is the pid of a child of parent named comm, or 0.
func childOf(parent int, comm string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		st := string(b)
		lp, rp := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if lp < 0 || rp < 0 {
			continue
		}
		fields := strings.Fields(st[rp+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(parent) && strings.HasPrefix(comm, st[lp+1:rp]) {
			return pid
		}
	}
	return 0
}

// waitExit waits for drainproxy pid to exit and returns its exit code. The first
// generation (firstPid) is exec's child, whose code arrives on firstExit; a later one is
// a child of the first, reparented to the soak (a subreaper).
func waitExit(pid, firstPid int, firstExit <-chan int, within time.Duration) (int, error) {
	done := firstExit
	if pid != firstPid {
		ch := make(chan int, 1)
		go func() {
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
				ch <- -1
				return
			}
			ch <- ws.ExitStatus()
		}()
		done = ch
	}
	select {
	case code := <-done:
		if code == -1 {
			return 0, fmt.Errorf("cannot wait for drainproxy pid %d: not the soak's child", pid)
		}
		return code, nil
	case <-time.After(within):
		return 0, fmt.Errorf("drainproxy pid %d did not exit within %s of SIGTERM", pid, within)
	}
}

// inWindow reports whether t falls in a documented window.
func (s *soak) inWindow(t time.Time) bool {
	s.windowsMu.Lock()
	defer s.windowsMu.Unlock()
	for _, w := range s.windows {
		if !t.Before(w[0]) && !t.After(w[1]) {
			return true
		}
	}
	return false
}

func (s *soak) checkFailures() []string {
	var out []string
	excused := 0
	for _, f := range s.t.failures {
		if s.inWindow(f.at) && !strings.HasPrefix(f.what, "wrong body") {
			excused++
			continue
		}
		out = append(out, f.at.Format("15:04:05.000")+" "+f.what)
	}
	fmt.Printf("soak: %d failures inside the SIGKILL window (documented), %d outside\n", excused, len(out))
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more", len(out)-20))
	}
	return out
}

// watchReadiness asks /readyz 4 times a second until the load ends: an answer other than
// 200 is a failure (a load balancer would take the replica out), unless in the SIGKILL
// window. An admin listener that cannot be reached during an upgrade's handover is no
// answer, and not counted.
func (s *soak) watchReadiness() {
	c := http.Client{Timeout: 2 * time.Second}
	for !s.stopped() {
		resp, err := c.Get("http://" + s.admin + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				s.t.fail(fmt.Sprintf("/readyz %d %s", resp.StatusCode, strings.TrimSpace(string(body))))
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stopped reports whether the load should end.
func (s *soak) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *soak) breathe() {
	time.Sleep(s.o.pause + time.Duration(mrand.Int64N(int64(s.o.pause)+1)))
}

// startLoad starts every kind of client; each stops when s.stop is closed.
func (s *soak) startLoad(wg *sync.WaitGroup) {
	keepAlive := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	newConns := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	h2cTransport := &http.Transport{Protocols: new(http.Protocols)}
	h2cTransport.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	h2c := &http.Client{Timeout: 60 * time.Second, Transport: h2cTransport}
	h2tls := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the soak's own self-signed certificate
		ForceAttemptHTTP2: true,
	}}
	plain, secure := "http://"+s.plain, "https://"+s.secure
	for range 4 {
		wg.Go(func() { s.loop(func() { s.get(keepAlive, plain, "/", hello, 1) }) })
	}
	for range 2 {
		wg.Go(func() { s.loop(func() { s.get(newConns, plain, "/", hello, 1) }) })
	}
	for range 2 {
		wg.Go(func() { s.loop(func() { s.get(h2c, plain, "/", hello, 2) }) })
	}
	for range 2 {
		wg.Go(func() { s.loop(func() { s.post(h2c, plain, 2) }) })
	}
	for range 2 {
		wg.Go(func() { s.loop(func() { s.post(h2tls, secure, 2) }) })
	}
	for range 2 {
		wg.Go(func() { s.loop(func() { s.get(h2tls, secure, "/", hello, 2) }) })
	}
	for range 2 {
		wg.Go(func() { s.loop(func() { s.post(keepAlive, plain, 1) }) })
	}
	for range 4 {
		wg.Go(func() { s.loop(func() { s.get(keepAlive, plain, "/slow?d=2s", hello, 1) }) })
	}
	stream := "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\nline 7\nline 8\nline 9\nline 10\n"
	for range 4 {
		wg.Go(func() { s.loop(func() { s.get(keepAlive, plain, "/stream?n=10&every=200ms", stream, 1) }) })
	}
	for range s.o.websockets {
		wg.Go(func() {
			for !s.stopped() {
				s.websocket()
			}
		})
	}
}

func (s *soak) loop(fn func()) {
	for n := 0; n < 100_000_000 && !s.stopped(); n++ { // bounded; stop ends it long before
		fn()
		s.breathe()
	}
}

func withID(path, id string) string {
	if strings.Contains(path, "?") {
		return path + "&id=" + id
	}
	return path + "?id=" + id
}

func (s *soak) get(c *http.Client, base, path, want string, protoMajor int) {
	id := s.nextID()
	s.t.send(id)
	resp, err := c.Get(base + withID(path, id))
	if err != nil {
		s.t.fail(fmt.Sprintf("GET %s id=%s: %v", path, id, err))
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		s.t.fail(fmt.Sprintf("GET %s id=%s: body: %v", path, id, err))
	case resp.StatusCode != http.StatusOK:
		s.t.fail(fmt.Sprintf("GET %s id=%s: %d %s", path, id, resp.StatusCode, strings.TrimSpace(string(body))))
	case string(body) != want:
		s.t.wrong(fmt.Sprintf("GET %s id=%s: %q", path, id, body))
	case resp.ProtoMajor != protoMajor:
		s.t.fail(fmt.Sprintf("GET %s id=%s: over %s, want HTTP/%d", path, id, resp.Proto, protoMajor))
	default:
		s.t.done(id)
	}
}

// post sends a random body of up to 256 KiB to /echo and compares the answer byte for byte.
func (s *soak) post(c *http.Client, base string, protoMajor int) {
	id := s.nextID()
	s.t.send(id)
	body := make([]byte, mrand.IntN(256<<10)+1)
	rand.Read(body)
	resp, err := c.Post(base+"/echo?id="+id, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		s.t.fail(fmt.Sprintf("POST /echo id=%s (%d bytes): %v", id, len(body), err))
		return
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		s.t.fail(fmt.Sprintf("POST /echo id=%s: body: %v", id, err))
	case resp.StatusCode != http.StatusOK:
		s.t.fail(fmt.Sprintf("POST /echo id=%s: %d %s", id, resp.StatusCode, strings.TrimSpace(string(got))))
	case !bytes.Equal(got, body):
		s.t.wrong(fmt.Sprintf("POST /echo id=%s: %d bytes back for %d sent", id, len(got), len(body)))
	case resp.ProtoMajor != protoMajor:
		s.t.fail(fmt.Sprintf("POST /echo id=%s: over %s", id, resp.Proto))
	default:
		s.t.done(id)
	}
}

// websocket opens one WebSocket, echoes a message every 500 ms for 3-15 s (well inside the
// grace, so that no restart or upgrade may cut it), and closes it with 1000.
func (s *soak) websocket() {
	id := s.nextID()
	s.t.send(id)
	fail := func(format string, args ...any) {
		s.t.fail(fmt.Sprintf("WebSocket id=%s: ", id) + fmt.Sprintf(format, args...))
		time.Sleep(100 * time.Millisecond)
	}
	c, err := net.DialTimeout("tcp", s.plain, 5*time.Second)
	if err != nil {
		fail("dial: %v", err)
		return
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /ws?id=%s HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s/\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id, s.plain, s.plain)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		fail("upgrade: %v", err)
		return
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		fail("upgrade: status %d", res.StatusCode)
		return
	}
	end := time.Now().Add(3*time.Second + time.Duration(mrand.Int64N(int64(12*time.Second))))
	for time.Now().Before(end) && !s.stopped() {
		msg := make([]byte, 1+mrand.IntN(2000))
		for i := range msg {
			msg[i] = 'a' + byte(mrand.IntN(26))
		}
		if _, err := c.Write(clientFrame(0x1, msg)); err != nil {
			fail("send: %v", err)
			return
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		op, payload, err := readFrame(br)
		if err != nil {
			fail("read: %v (the connection ended without a close frame)", err)
			return
		}
		if op == 0x8 {
			fail("closed by the server with %v", closeStatus(payload))
			return
		}
		if op != 0x1 || !bytes.Equal(payload, msg) {
			s.t.wrong(fmt.Sprintf("WebSocket id=%s: echo of %d bytes came back as opcode %d, %d bytes", id, len(msg), op, len(payload)))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.Write(clientFrame(0x8, binary.BigEndian.AppendUint16(nil, 1000)))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		op, _, err := readFrame(br)
		if err != nil || op == 0x8 {
			break // the close answer, or the server's TCP close after it
		}
	}
	s.t.done(id)
}

func closeStatus(p []byte) any {
	if len(p) < 2 {
		return "no status"
	}
	return binary.BigEndian.Uint16(p)
}

func clientFrame(opcode byte, payload []byte) []byte {
	f := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	}
	var key [4]byte
	rand.Read(key[:])
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

func readFrame(br *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("a frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(br, p)
	return h[0] & 0x0f, p, err
}

// checkAccessLog: every line is valid JSON with the documented fields; every line of a
// soak request names a request that was sent; every request answered 200 has its line.
func (s *soak) checkAccessLog(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return []string{"access log: " + err.Error()}
	}
	defer f.Close()
	var out []string
	logged := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
		var l struct {
			Time      *time.Time `json:"time"`
			Method    string     `json:"method"`
			Path      *string    `json:"path"`
			Status    *int       `json:"status"`
			RequestID *string    `json:"request_id"` // "" when drainproxy answered before the proxy (503 app_not_running)
			Upstream  string     `json:"upstream"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Time == nil || l.Path == nil || l.Status == nil ||
			l.Method == "" || l.RequestID == nil || l.Upstream == "" {
			out = append(out, fmt.Sprintf("access log line %d invalid: %.200s", lines, sc.Text()))
			continue
		}
		i := strings.Index(*l.Path, "id=")
		if i < 0 {
			continue // not the soak's (there is none such)
		}
		id := (*l.Path)[i+3:]
		if j := strings.IndexByte(id, '&'); j >= 0 {
			id = id[:j]
		}
		if logged[id] {
			out = append(out, fmt.Sprintf("access log: request id=%s logged twice", id))
		}
		logged[id] = true
		s.t.mu.Lock()
		sent := s.t.sent[id]
		s.t.mu.Unlock()
		if !sent {
			out = append(out, fmt.Sprintf("access log line %d names a request never sent: %.200s", lines, sc.Text()))
		}
	}
	missing := 0
	s.t.mu.Lock()
	for id := range s.t.completed {
		if !logged[id] {
			missing++
			if missing <= 5 {
				out = append(out, "access log: no line for request id="+id)
			}
		}
	}
	s.t.mu.Unlock()
	if missing > 5 {
		out = append(out, fmt.Sprintf("access log: %d completed requests have no line", missing))
	}
	fmt.Printf("soak: access log: %d lines, %d matched to soak requests, %d completed requests missing\n", lines, len(logged), missing)
	if len(out) > 25 {
		out = append(out[:25], fmt.Sprintf("... and %d more", len(out)-25))
	}
	return out
}

// checkLog fails on a panic or a data race in drainproxy's log.
func checkLog(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
		if bytes.Contains(b, []byte(bad)) {
			out = append(out, fmt.Sprintf("drainproxy's log has %q", bad))
		}
	}
	return out
}

// sample is one measurement of the serving drainproxy.
type sample struct {
	at         time.Duration // since the start
	pid        int
	generation int
	rssKiB     int64
	goroutines int64
	fds        int64
	threads    int64
	ok, failed int64
}

func (s *soak) sample(start time.Time, stop <-chan struct{}) []sample {
	var out []sample
	gen, lastPid := 0, 0
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		pid := s.pid()
		if pid > 0 {
			if pid != lastPid {
				gen++
				lastPid = pid
			}
			sm := sample{at: time.Since(start), pid: pid, generation: gen, ok: s.t.ok.Load()}
			s.t.mu.Lock()
			sm.failed = int64(len(s.t.failures))
			s.t.mu.Unlock()
			sm.rssKiB, sm.threads = procStatus(pid)
			sm.fds = countFds(pid)
			sm.goroutines = s.goroutines()
			out = append(out, sm)
		}
		select {
		case <-stop:
			return out
		case <-t.C:
		}
	}
}

func procStatus(pid int) (rssKiB, threads int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
		case "Threads:":
			threads, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rssKiB, threads
}

func countFds(pid int) int64 {
	e, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return int64(len(e))
}

func (s *soak) goroutines() int64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.admin + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int64(n)
		}
	}
	return 0
}

func writeCSV(path string, samples []sample) error {
	var b strings.Builder
	b.WriteString("seconds,pid,generation,rss_mib,goroutines,fds,threads,requests_ok,failures\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.0f,%d,%d,%.1f,%d,%d,%d,%d,%d\n", s.at.Seconds(), s.pid, s.generation,
			float64(s.rssKiB)/1024, s.goroutines, s.fds, s.threads, s.ok, s.failed)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// metric reads one measurement from a sample.
type metric struct {
	name  string
	get   func(sample) float64
	slack float64 // allowed absolute growth on top of 25%
}

var metrics = []metric{
	{"RSS MiB", func(s sample) float64 { return float64(s.rssKiB) / 1024 }, 16},
	{"goroutines", func(s sample) float64 { return float64(s.goroutines) }, 40},
	{"fds", func(s sample) float64 { return float64(s.fds) }, 30},
	{"threads", func(s sample) float64 { return float64(s.threads) }, 6},
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// checkGrowth compares the medians of the first and last window, within each process
// generation long enough to have both (at least 3 samples in each, not overlapping), and
// over the whole run.
func checkGrowth(samples []sample, window time.Duration) []string {
	var out []string
	compare := func(label string, ss []sample) {
		if len(ss) < 2 {
			return
		}
		w := window
		if span := ss[len(ss)-1].at - ss[0].at; w > span/2 {
			w = span / 2
		}
		var first, last []sample
		for _, s := range ss {
			if s.at <= ss[0].at+w {
				first = append(first, s)
			}
			if s.at >= ss[len(ss)-1].at-w {
				last = append(last, s)
			}
		}
		if len(first) < 3 || len(last) < 3 {
			return
		}
		for _, m := range metrics {
			var a, b []float64
			for _, s := range first {
				a = append(a, m.get(s))
			}
			for _, s := range last {
				b = append(b, m.get(s))
			}
			ma, mb := median(a), median(b)
			if mb > ma*1.25+m.slack {
				out = append(out, fmt.Sprintf("%s: %s grew from %.1f (first %s) to %.1f (last %s)", label, m.name, ma, w, mb, w))
			}
		}
	}
	// The first sample of each generation is taken before its load has ramped up.
	gens := map[int][]sample{}
	var warm []sample
	for _, s := range samples {
		if len(gens[s.generation]) > 0 || s.generation == 0 {
			warm = append(warm, s)
		}
		gens[s.generation] = append(gens[s.generation], s)
	}
	for g := 1; g <= len(gens); g++ {
		if ss := gens[g]; len(ss) > 1 {
			compare(fmt.Sprintf("generation %d", g), ss[1:])
		}
	}
	compare("the whole run", warm)
	return out
}

func summarize(samples []sample) {
	gens := map[int][]sample{}
	for _, s := range samples {
		gens[s.generation] = append(gens[s.generation], s)
	}
	for g := 1; g <= len(gens); g++ {
		ss := gens[g]
		line := fmt.Sprintf("soak: generation %d (pid %d, %d samples):", g, ss[0].pid, len(ss))
		for _, m := range metrics {
			lo, hi := m.get(ss[0]), m.get(ss[0])
			for _, s := range ss {
				lo, hi = min(lo, m.get(s)), max(hi, m.get(s))
			}
			line += fmt.Sprintf(" %s %.0f-%.0f;", m.name, lo, hi)
		}
		fmt.Println(strings.TrimSuffix(line, ";"))
	}
}

func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	var out []string
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		out = append(out, p)
	}
	return out, nil
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(dir string) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "drainproxy soak"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
