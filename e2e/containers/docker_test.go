// Package containers runs drainproxy's container recipes (the Dockerfile, scripts/image,
// examples/compose and examples/kubernetes) in real containers under the local Docker
// engine. Nothing is pulled: the images are built FROM scratch from binaries built here.
// Every container, network and image a test creates has a unique name and is removed
// when it ends.
package containers

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testenv"
)

// images are the tags built for this run of the package.
type images struct {
	proxy   string // Dockerfile: drainproxy alone
	standin string // examples/standin: the app image we "cannot change"
	wrapped string // examples/wrap: the stand-in with drainproxy as its entrypoint
	testapp string // wrapped + internal/testapp, for the apps that misbehave
}

var (
	buildOnce sync.Once
	built     images
	buildErr  error
	buildTag  = "test-" + randomID()
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built.proxy != "" { // remove what this run built, whatever the outcome
		exec.Command("docker", "rmi", "-f", built.proxy, built.standin, built.wrapped, built.testapp).Run()
	}
	os.Exit(code)
}

func randomID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// needImages skips (or in CI fails) without a Docker engine, and builds the images once:
// through scripts/image, exactly as a user would.
func needImages(t *testing.T) images {
	t.Helper()
	testenv.NeedDocker(t)
	buildOnce.Do(func() {
		built, buildErr = buildImages()
	})
	if buildErr != nil {
		t.Fatalf("building the images: %v", buildErr)
	}
	return built
}

func buildImages() (images, error) {
	root := repoRoot()
	im := images{
		proxy:   "drainproxy:" + buildTag,
		standin: "drainproxy-standin:" + buildTag,
		wrapped: "drainproxy-standin-wrapped:" + buildTag,
		testapp: "drainproxy-testapp:" + buildTag,
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "image"), buildTag)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		exec.Command("docker", "rmi", "-f", im.proxy, im.standin, im.wrapped).Run()
		return images{}, fmt.Errorf("scripts/image %s: %v\n%s", buildTag, err, out)
	}
	built.proxy = im.proxy // from here TestMain removes them
	built.standin, built.wrapped = im.standin, im.wrapped
	ctx, err := os.MkdirTemp("", "drainproxy-testapp-image")
	if err != nil {
		return im, err
	}
	defer os.RemoveAll(ctx)
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctx, "testapp"), "./internal/testapp")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		return im, fmt.Errorf("go build testapp: %v\n%s", err, out)
	}
	dockerfile := "FROM " + im.wrapped + "\nCOPY testapp /testapp\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return im, err
	}
	if out, err := exec.Command("docker", "build", "--quiet", "-t", im.testapp, ctx).CombinedOutput(); err != nil {
		return im, fmt.Errorf("docker build testapp image: %v\n%s", err, out)
	}
	built.testapp = im.testapp
	return im, nil
}

// docker runs the docker CLI and fails the test if it fails.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := dockerErr(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func dockerErr(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// newNetwork creates a bridge network for one test and removes it at the end (after the
// containers on it, whose cleanups run first).
func newNetwork(t *testing.T, name string) string {
	t.Helper()
	docker(t, "network", "create", name)
	t.Cleanup(func() { dockerErr("network", "rm", name) })
	return name
}

// run starts a detached container and removes it (and its anonymous volumes) at the end,
// after saving its logs in the test output when the test failed.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	docker(t, append([]string{"run", "-d", "--name", name}, args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := dockerErr("logs", "--tail", "60", name)
			t.Logf("logs of %s:\n%s", name, logs)
		}
		dockerErr("rm", "-f", "-v", name)
	})
}

func containerIP(t *testing.T, name string) string {
	t.Helper()
	ip := docker(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
	if ip == "" {
		t.Fatalf("container %s has no IP address", name)
	}
	return ip
}

func exitCode(t *testing.T, name string) string {
	t.Helper()
	return docker(t, "inspect", "-f", "{{.State.ExitCode}}", name)
}

// waitStatus polls url until it answers want (readiness: never a sleep), up to a minute.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within a minute (last: %s)", url, want, last)
}

// waitLog polls a container's output until it contains s, and returns the output.
func waitLog(t *testing.T, name, s string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		out, _ := dockerErr("logs", name)
		if strings.Contains(out, s) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container %s did not log %q within a minute", name, s)
	return ""
}
