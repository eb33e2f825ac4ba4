package containers

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// compose is examples/compose/docker-compose.yml under its own project name.
type compose struct {
	t       *testing.T
	cmd     []string // docker compose, or docker-compose
	project string
	env     []string
}

func newCompose(t *testing.T, im images) *compose {
	t.Helper()
	c := &compose{t: t, project: "dpt-compose-" + randomID()}
	if exec.Command("docker", "compose", "version").Run() == nil {
		c.cmd = []string{"docker", "compose"}
	} else if p, err := exec.LookPath("docker-compose"); err == nil {
		c.cmd = []string{p}
	} else {
		testenv.Unavailable(t, "neither docker compose nor docker-compose is installed (apt-get install -y docker-compose)")
	}
	c.env = append(os.Environ(), "DRAINPROXY_IMAGE="+im.proxy, "STANDIN_IMAGE="+im.standin,
		"DRAINPROXY_PORT=") // empty: Docker picks a free port on 127.0.0.1
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.run("logs", "--no-color", "--tail", "60")
			t.Logf("compose logs:\n%s", out)
		}
		c.run("down", "--volumes", "--remove-orphans", "--timeout", "1")
	})
	return c
}

func (c *compose) run(args ...string) (string, error) {
	// As the file's comment says to run it: from its directory, no -f, the project named
	// by the environment, so that the commands are the ones users type.
	full := append(append([]string{}, c.cmd[1:]...), args...)
	cmd := exec.Command(c.cmd[0], full...)
	cmd.Dir = filepath.Join(repoRoot(), "examples", "compose")
	cmd.Env = append(c.env, "COMPOSE_PROJECT_NAME="+c.project)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (c *compose) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// The compose example under a no-retry load through its published 127.0.0.1 port:
// docker compose stop mid-load loses nothing on established connections, answers the
// slow requests in flight, and drainproxy exits 0.
func TestCompose(t *testing.T) {
	im := needImages(t)
	c := newCompose(t, im)
	c.must("up", "-d") // the proxy starts once the app's healthcheck passes
	proxy := c.must("ps", "-q", "proxy")
	addr := c.must("port", "proxy", "8080")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("the proxy is published on %q, want 127.0.0.1 only", addr)
	}
	// Ready when its healthcheck (drainproxy probe .../readyz) says so.
	for deadline := time.Now().Add(time.Minute); ; {
		h := docker(t, "inspect", "-f", "{{.State.Health.Status}}", proxy)
		if h == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy's healthcheck is %q after a minute", h)
		}
		time.Sleep(100 * time.Millisecond)
	}

	l := startLoad(addr, 4, func() bool { return true })
	defer l.finish()
	for deadline := time.Now().Add(30 * time.Second); l.ok.Load() < 200; {
		if time.Now().After(deadline) {
			t.Fatalf("the load does not get through: %s", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l.failed() != 0 {
		t.Fatalf("requests failed before the stop: %s", l)
	}
	// New connections only, from the project's network (the proxy's address) and through
	// the published port (docker-proxy, which cannot pass a refusal on: shown, not failed).
	inNet := startNewConns("the compose network", containerIP(t, proxy)+":8080")
	viaProxy := startNewConns("the published port on 127.0.0.1 (docker-proxy)", addr)
	defer inNet.finish()
	defer viaProxy.finish()
	// Longer than the example's drain delay (3 s) plus the time Compose may take to send
	// the signal on a loaded machine, so in flight when the listener closes: they hold the
	// wait open, during which new connections must be refused. Any that reaches
	// drainproxy a little after the stop is still within the delay.
	slow := slowRequests(addr, 5, 8*time.Second)
	okBefore := l.ok.Load()
	stopped := make(chan struct{})
	go func() { c.run("stop"); close(stopped) }() // the proxy first (it depends on the app), then the app
	slowFailed := collect(slow, 5)
	// drainproxy exits right after the slow requests: stop probing before its address goes.
	inNet.finish()
	viaProxy.finish()
	<-stopped
	l.finish()
	inNet.check(t)
	t.Log("new connections: " + viaProxy.String())

	t.Logf("load: %s (ok before stop: %d)", l, okBefore)
	if n := l.failedReused.Load(); n != 0 {
		t.Errorf("%d requests lost on established connections", n)
	}
	if l.ok.Load() <= okBefore {
		t.Errorf("no request was served after the stop began (during the drain delay)")
	}
	if len(slowFailed) > 0 {
		t.Errorf("%d of 5 slow requests failed: %v", len(slowFailed), slowFailed)
	}
	if code := exitCode(t, proxy); code != "0" {
		t.Errorf("drainproxy's exit code = %s, want 0", code)
	}
	logs, _ := dockerErr("logs", proxy)
	if !strings.Contains(logs, `"drain complete"`) || !strings.Contains(logs, `"aborted":0`) {
		t.Errorf("no clean drain in drainproxy's log:\n%s", logs)
	}
	checkDrainLog(t, logs)
}
