package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/admin"
)

// slowUpstream holds GET /slow until release is closed, and says when one arrived.
func slowUpstream(t *testing.T) (addr string, arrived <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}, 8), make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		select {
		case <-out:
		case <-r.Context().Done():
		}
		io.WriteString(w, "done")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr = serveUpstream(t, mux)
	release = func() { once.Do(func() { close(out) }) }
	t.Cleanup(release)
	return addr, in, release
}

// watchStatus runs `drainproxy status -watch` against admin with its stdout on a pipe.
type statusRun struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	grew chan struct{}
	done chan int
}

func startStatusWatch(t *testing.T, adminAddr string, args ...string) *statusRun {
	t.Helper()
	s := &statusRun{done: make(chan int, 1), grew: make(chan struct{}, 1)}
	s.cmd = exec.Command(binary, append([]string{"status", "-admin", adminAddr, "-watch", "-interval", "50ms"}, args...)...)
	pipe, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			s.mu.Lock()
			s.out.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			select {
			case s.grew <- struct{}{}:
			default:
			}
		}
		s.cmd.Wait()
		s.done <- s.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	return s
}

func (s *statusRun) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// waitFor waits until the output contains every one of want on one line.
func (s *statusRun) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		for line := range strings.Lines(s.output()) {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				return
			}
		}
		select {
		case <-s.grew:
		case <-deadline:
			t.Fatalf("status -watch never printed a line with %q:\n%s", want, s.output())
		}
	}
}

func (s *statusRun) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.done:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("status -watch did not exit:\n%s", s.output())
		return -1
	}
}

func getStatus(t *testing.T, adminAddr string) admin.Status {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// Issue 25, items 1-3: /status lists what the drain waits for, `drainproxy status -watch`
// on a pipe prints one line per change and exits 0 once the drain completed, and the log
// says every progress_interval what is left and which request finished last.
func TestStatusWatchFollowsACleanDrain(t *testing.T) {
	up, arrived, release := slowUpstream(t)
	config := filepath.Join(t.TempDir(), "config.hcl")
	os.WriteFile(config, []byte(fmt.Sprintf(`
upstream {
  url = "http://%s"
}
drain {
  grace = "30s"
  progress_interval = "200ms"
}
`, up)), 0o644)
	p := startProxy(t, "-config", config, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-access-log", "off")

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(p.URL() + "/slow?secret=hunter2")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-arrived

	st := getStatus(t, p.Admin)
	if st.Inflight == nil || st.Inflight.Total != 1 || len(st.Inflight.Entries) != 1 {
		t.Fatalf("/status inflight %+v: want the one request", st.Inflight)
	}
	e := st.Inflight.Entries[0]
	if e.Path != "/slow" || e.Method != "GET" || e.Protocol != "HTTP/1.1" || e.WaitsFor != "upstream headers" || len(e.ID) != 32 || e.Client == "" {
		t.Errorf("/status entry %+v", e)
	}

	w := startStatusWatch(t, p.Admin)
	w.waitFor(t, "phase=ready", "requests=1")
	p.Signal(syscall.SIGTERM)
	w.waitFor(t, "phase=stopping", "step=wait", "requests=1", `oldest="GET /slow`)
	p.WaitLog("drain progress: waiting", 10*time.Second)
	release()
	if code := w.exitCode(t); code != 0 {
		t.Errorf("status -watch exited %d after a clean drain; want 0:\n%s", code, w.output())
	}
	if out := w.output(); !strings.Contains(out, "drain complete: nothing was cut") {
		t.Errorf("status -watch output lacks the verdict:\n%s", out)
	}
	if b := <-got; b != "done" {
		t.Errorf("the request in flight got %q", b)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("drainproxy exit code %d", code)
	}
	prog := p.WaitLog("drain progress: waiting", time.Second)
	if prog["requests"] != 1.0 || !strings.Contains(fmt.Sprint(prog["oldest"]), "GET /slow") || strings.Contains(fmt.Sprint(prog["oldest"]), "hunter2") {
		t.Errorf("progress line %v", prog)
	}
	if fin := p.WaitLog("in-flight requests finished", time.Second); !strings.Contains(fmt.Sprint(fin["last"]), "GET /slow") {
		t.Errorf("the line that ends the wait does not name the last request: %v", fin)
	}
	// One line per change: far fewer lines than polls, and no two alike in a row.
	lines := strings.Split(strings.TrimSpace(w.output()), "\n")
	for i := 1; i < len(lines); i++ {
		if changeless(lines[i]) == changeless(lines[i-1]) {
			t.Errorf("lines %d and %d say the same:\n%s\n%s", i-1, i, lines[i-1], lines[i])
		}
	}
}

// changeless drops the clock from a status line.
func changeless(line string) string {
	var keep []string
	for _, f := range strings.Fields(line) {
		if strings.Contains(f, ":") && !strings.Contains(f, "=") || strings.HasPrefix(f, "in_step=") || strings.HasPrefix(f, "left=") {
			continue
		}
		keep = append(keep, f)
	}
	return strings.Join(keep, " ")
}

// Issue 25, items 2, 4 and 5: a drain whose deadline cuts a request makes `status -watch`
// exit 1; the summary, the metrics, the access log and the termination log say what was cut.
func TestStatusWatchExitsOneWhenTheDeadlineCuts(t *testing.T) {
	up, arrived, _ := slowUpstream(t)
	dir := t.TempDir()
	termLog := filepath.Join(dir, "termination-log")
	accessLog := filepath.Join(dir, "access.log")
	config := filepath.Join(dir, "config.hcl")
	os.WriteFile(config, []byte(fmt.Sprintf(`
upstream {
  url = "http://%s"
}
drain {
  grace = "1s"
  termination_log = "%s"
}
`, up, termLog)), 0o644)
	p := startProxy(t, "-config", config, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-access-log", accessLog)
	go func() {
		if resp, err := http.Get(p.URL() + "/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	<-arrived
	w := startStatusWatch(t, p.Admin)
	w.waitFor(t, "phase=ready", "requests=1")
	p.Signal(syscall.SIGTERM)
	if code := w.exitCode(t); code != 1 {
		t.Errorf("status -watch exited %d after a drain that cut a request; want 1:\n%s", code, w.output())
	}
	if out := w.output(); !strings.Contains(out, "drain complete, ABORTED: 1 cut (1 before the response head") {
		t.Errorf("status -watch output:\n%s", out)
	}
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Errorf("drainproxy exit code %d; want 1", code)
	}
	sum := p.WaitLog("drain complete", time.Second)
	if sum["cut_before_head"] != 1.0 || sum["cut_mid_response"] != 0.0 || sum["upgrades_closed"] != 0.0 || sum["aborted"] != 1.0 {
		t.Errorf("summary %v", sum)
	}
	b, err := os.ReadFile(termLog)
	if err != nil || !strings.Contains(string(b), "aborted=1 cut_before_head=1 cut_mid_response=0") || !strings.Contains(string(b), "exit_code=1") {
		t.Errorf("termination log: %q, %v", b, err)
	}
	data, _ := os.ReadFile(accessLog)
	if !strings.Contains(string(data), `"path":"/slow"`) || !strings.Contains(string(data), `"cut_by_drain":"before_head"`) {
		t.Errorf("access log does not mark the cut request:\n%s", data)
	}
}
