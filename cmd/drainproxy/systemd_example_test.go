package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/internal/testenv"
)

// unitValue returns the value of key= in a systemd unit file of the repository.
func unitValue(t *testing.T, file, key string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s=", file, key)
	return ""
}

// shippedUnits is what examples/systemd and config.hcl say, and the shipped config made
// runnable here: the same file with only its addresses moved to free ports (8080 and 9901
// may be taken on a shared machine) and the upstream pointed at this test's.
type shippedUnits struct {
	listen  string   // the socket unit's ListenStream=
	args    []string // the service's ExecStart= after the binary, with the config's path replaced
	config  string   // the copy of config.hcl
	fromCfg string   // the listener address config.hcl gives
}

func shipped(t *testing.T, listen, upstream string) shippedUnits {
	t.Helper()
	u := shippedUnits{listen: unitValue(t, "examples/systemd/drainproxy.socket", "ListenStream")}
	exec := strings.Fields(unitValue(t, "examples/systemd/drainproxy.service", "ExecStart"))
	if len(exec) < 3 || exec[0] != "/usr/local/bin/drainproxy" || exec[1] != "-config" {
		t.Fatalf("ExecStart= is %q; this test knows /usr/local/bin/drainproxy -config FILE", exec)
	}
	cfg, err := config.Parse([]string{"-config", "../../config.hcl"}, io.Discard)
	if err != nil {
		t.Fatalf("the shipped config.hcl: %v", err)
	}
	u.fromCfg = cfg.Listeners[0].Address
	src, err := os.ReadFile("../../config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	for old, new := range map[string]string{
		`address = "` + u.fromCfg + `"`:             `address = "` + listen + `"`,
		`address = "` + cfg.Admin.Address + `"`:     `address = "127.0.0.1:0"`,
		`url = "` + cfg.Upstream.URL.String() + `"`: `url = "` + upstream + `"`,
	} {
		if strings.Count(s, old) != 1 {
			t.Fatalf("config.hcl has %d times %q; this test moves it to a free port", strings.Count(s, old), old)
		}
		s = strings.Replace(s, old, new, 1)
	}
	u.config = filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(u.config, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	u.args = append([]string{exec[1], u.config}, exec[3:]...)
	return u
}

// Issue 24.7: the example units and the shipped config work together as shipped: the
// socket unit listens where the config's listener does, drainproxy started with the
// service's command line under systemd-socket-activate takes that socket, serves, and
// drains a request in flight on SIGTERM (exit 0).
func TestSystemdExampleAsShipped(t *testing.T) {
	sa := testenv.NeedProgram(t, "systemd-socket-activate", "systemd")
	up := startUpstream(t)
	listen := freeAddr(t)
	u := shipped(t, listen, up)
	if u.listen != u.fromCfg {
		t.Fatalf("drainproxy.socket listens on %s but config.hcl's listener is %s: together they fail with address in use", u.listen, u.fromCfg)
	}
	cmd := exec.Command(sa, append([]string{"-l", listen, binary}, u.args...)...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	p := startProc(t, cmd, io.Discard)
	p.WaitLog("Listening on "+listen+" as 3.", 20*time.Second)

	// systemd-socket-activate starts drainproxy at the first connection: a slow request.
	slow := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + listen + "/slow?d=2s")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = &os.PathError{Op: "GET /slow", Err: os.ErrInvalid, Path: resp.Status}
			}
		}
		slow <- err
	}()
	p.WaitLog("using the socket systemd passed", 20*time.Second)
	p.WaitLog("ready", 20*time.Second)
	p.Signal(syscall.SIGTERM)
	if err := <-slow; err != nil {
		t.Errorf("the request in flight at SIGTERM: %v", err)
	}
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// Issue 24.7: a socket that matches no listener (0.0.0.0 against the config's 127.0.0.1)
// is named in the log before the failure it causes, so the fix is in the log.
func TestSystemdSocketMatchingNothingIsLogged(t *testing.T) {
	sa := testenv.NeedProgram(t, "systemd-socket-activate", "systemd")
	up := startUpstream(t)
	listen := freeAddr(t)
	u := shipped(t, listen, up)
	everywhere := "0.0.0.0:" + listen[strings.LastIndex(listen, ":")+1:]
	cmd := exec.Command(sa, append([]string{"-l", everywhere, binary}, u.args...)...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=1")
	p := startProc(t, cmd, io.Discard)
	p.WaitLog("Listening on "+everywhere+" as 3.", 20*time.Second)
	go func() { // the first connection starts drainproxy
		c, err := dialRaw(listen, 5*time.Second)
		if err == nil {
			c.Close()
		}
	}()
	p.WaitLog("a socket systemd passed matches no listener; closing it (name it after the listener's address with FileDescriptorName=, or listen on its address)", 20*time.Second)
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Errorf("exit code %d, want 1 (cannot listen)", code)
	}
}
