package containers

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// readmeDockerRun is the docker run line the README gives, word for word; the test checks
// that the README still has it, then runs it with only what a test must change: -d and a
// name, a free host port for 8080, this run's image tag, and the stand-in's address for
// HOST:PORT.
const readmeDockerRun = "docker run -p 127.0.0.1:8080:8080 drainproxy:latest -upstream http://HOST:PORT"

// TestImageAsTyped: the image listens on all interfaces by default (its config file), so
// the README's docker run serves through the published port, and its HEALTHCHECK says
// healthy only while that is true: unhealthy once the upstream is gone.
func TestImageAsTyped(t *testing.T) {
	if !docsContain(t, readmeDockerRun) {
		t.Fatalf("neither README.md nor docs/ has the line %q any more: change readmeDockerRun to the line users are told to type", readmeDockerRun)
	}
	im := needImages(t)
	id := "dpt-typed-" + randomID()
	app := id + "-app"
	run(t, app, im.standin, "-listen", ":3000") // the default bridge, as a user's app would be
	appAddr := containerIP(t, app) + ":3000"

	_, hostPort, _ := net.SplitHostPort(testenv.FreeAddr(t))
	words := strings.Fields(readmeDockerRun)[2:] // after "docker run"
	for i, w := range words {
		switch {
		case w == "127.0.0.1:8080:8080":
			words[i] = "127.0.0.1:" + hostPort + ":8080"
		case w == "drainproxy:latest":
			words[i] = im.proxy
		case strings.Contains(w, "HOST:PORT"):
			words[i] = strings.Replace(w, "HOST:PORT", appAddr, 1)
		}
	}
	proxy := id + "-proxy"
	run(t, proxy, words...)

	health := func() string { return docker(t, "inspect", "-f", "{{.State.Health.Status}}", proxy) }
	waitHealth := func(want string, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); health() != want; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the image's HEALTHCHECK says %q after %v, want %q", health(), within, want)
			}
		}
	}
	waitHealth("healthy", time.Minute)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://127.0.0.1:" + hostPort + "/")
	if err != nil {
		t.Fatalf("healthy, but the published port does not serve: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("through the published port: %d %s", resp.StatusCode, body)
	}

	// The upstream goes away: /readyz fails after health_check's 3 failures (5s apart),
	// then Docker's 3 retries (5s apart) make the container unhealthy.
	docker(t, "stop", "-t", "1", app)
	waitHealth("unhealthy", 2*time.Minute)
}

// docsContain reports whether README.md or a file in docs/ has s.
func docsContain(t *testing.T, s string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(repoRoot(), "docs", "*.md"))
	for _, f := range append([]string{filepath.Join(repoRoot(), "README.md")}, files...) {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// Issue 24.11: the stand-in app, PID 1 of its container, dies at once on docker stop's
// SIGTERM with the code a shell reports for it (143), not Go's 2 (the kernel ignores the
// signal Go re-raises in PID 1), which reads as a usage error.
func TestStandinExitCodeAsPID1(t *testing.T) {
	im := needImages(t)
	name := "dpt-standin-" + randomID()
	run(t, name, im.standin, "-listen", ":3000")
	waitLog(t, name, "standin: serving on")
	start := time.Now()
	docker(t, "stop", "-t", "20", name)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("docker stop took %v: the stand-in ignored SIGTERM until SIGKILL", took)
	}
	if code := exitCode(t, name); code != "143" {
		t.Errorf("exit code %s after docker stop, want 143 (128 + SIGTERM)", code)
	}
}

// A listener on loopback only inside a container is out of reach of -p: drainproxy says so
// (issue 24 item 5: the old image failed that way without a word).
func TestImageWarnsOnLoopbackOnly(t *testing.T) {
	im := needImages(t)
	name := "dpt-loopback-" + randomID()
	run(t, name, im.proxy, "-listen", "127.0.0.1:8080", "-upstream", "http://127.0.0.1:3000")
	waitLog(t, name, "listening on loopback only, inside a container")
}
