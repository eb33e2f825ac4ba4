package main

// drainproxy in a container with a memory limit, on a Docker network of the test's own: the
// runtime must know the limit (GOMEMLIMIT from the cgroup), and a burst of connections must
// be collected rather than OOM-killed, with the drain still completing.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/instance"
	"github.com/drainproxy/drainproxy/internal/testenv"
)

// docker runs the docker client and returns its trimmed output, failing t on an error.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// containerLog is what the container wrote to stderr (drainproxy's log, without the
// access log on stdout), its last tail lines if tail > 0.
func containerLog(t *testing.T, name string, tail int) string {
	t.Helper()
	args := []string{"logs", name}
	if tail > 0 {
		args = []string{"logs", "--tail", fmt.Sprint(tail), name}
	}
	var stderr strings.Builder
	cmd := exec.Command("docker", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stderr.String()
}

// buildScratchImage builds drainproxy and the stand-in app as static binaries and an image
// FROM scratch holding both, in a temporary directory; the image is removed at cleanup.
func buildScratchImage(t *testing.T, tag string) {
	t.Helper()
	dir := t.TempDir()
	for pkg, name := range map[string]string{".": "drainproxy", "../standin": "standin"} {
		build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", name, err, out)
		}
	}
	df := "FROM scratch\nCOPY drainproxy standin /\nENTRYPOINT [\"/drainproxy\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	docker(t, "build", "-q", "-t", tag, dir)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
}

// TestContainerMemoryLimit runs drainproxy with `docker run --memory 64m` in front of the
// stand-in app in a second container, loads it with 1500 connections, and drains it with
// `docker stop` while they are busy.
func TestContainerMemoryLimit(t *testing.T) {
	testenv.NeedDocker(t)
	if testing.Short() {
		t.Skip("builds an image and runs containers")
	}
	var b [4]byte
	rand.Read(b[:])
	id := "drainproxy-memlimit-" + hex.EncodeToString(b[:])
	buildScratchImage(t, id+":test")

	docker(t, "network", "create", id)
	t.Cleanup(func() { exec.Command("docker", "network", "rm", id).Run() })
	rm := func(name string) { exec.Command("docker", "rm", "-f", name).Run() }
	app, proxy := id+"-app", id+"-proxy"
	t.Cleanup(func() { rm(proxy); rm(app) })
	docker(t, "run", "-d", "--name", app, "--network", id, "--network-alias", "app",
		"--entrypoint", "/standin", id+":test", "-listen", "0.0.0.0:3000")
	var limit uint64 = 64 << 20
	docker(t, "run", "-d", "--name", proxy, "--network", id, "--memory", "64m", "--memory-swap", "64m",
		id+":test", "-listen", "0.0.0.0:8080", "-upstream", "http://app:3000", "-admin", "off",
		"-log-format", "json", "-drain-delay", "1s", "-grace", "20s")
	ip := docker(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", proxy)
	base := "http://" + net.JoinHostPort(ip, "8080")

	// Ready: the proxy answers through to the app (polled, at most 20 s).
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("drainproxy in the container did not answer 200 within 20 s (last error %v); its log:\n%s",
				err, containerLog(t, proxy, 0))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The runtime knows the limit: drainproxy logged what it took from the cgroup.
	var found map[string]any
	sc := bufio.NewScanner(strings.NewReader(containerLog(t, proxy, 0)))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["@message"] == "memory limit from the cgroup" {
			found = line
		}
	}
	if found == nil {
		t.Fatalf("no \"memory limit from the cgroup\" line in the log of drainproxy run with --memory 64m:\n%s", containerLog(t, proxy, 0))
	}
	if got, want := found["cgroup_limit_bytes"], float64(limit); got != want {
		t.Errorf("cgroup_limit_bytes = %v, want %v", got, want)
	}
	if got, want := found["GOMEMLIMIT_bytes"], float64(uint64(float64(limit)*instance.MemLimitRatio)); got != want {
		t.Errorf("GOMEMLIMIT_bytes = %v, want %v (%.1f of 64 MiB)", got, want, instance.MemLimitRatio)
	}

	// The burst: 1500 connections, each sending requests back to back until the drain
	// closes the listener or 60 s pass. docker stop is sent 3 s in, while they are busy.
	const conns = 1500
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ok, bad, refused atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for n := 0; n < 100000 && ctx.Err() == nil; n++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/", nil)
				resp, err := client.Do(req)
				if err != nil {
					// After the listener closes, new connections are refused: that ends this client.
					refused.Add(1)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(body) != "Hello, world\n" {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("status %d, body %q, error %v", resp.StatusCode, body, err))
					return
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(2 * time.Second) // the length of the burst before the drain, not a wait for readiness
	usage, _ := exec.Command("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", proxy).Output()
	stopped := make(chan string, 1)
	go func() {
		out, _ := exec.Command("docker", "stop", "-t", "30", proxy).CombinedOutput()
		stopped <- string(out)
	}()
	wg.Wait()
	<-stopped

	var state struct {
		OOMKilled bool
		ExitCode  int
		Status    string
	}
	if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .State}}", proxy)), &state); err != nil {
		t.Fatal(err)
	}
	logs := containerLog(t, proxy, 15)
	t.Logf("burst of %d connections: %d responses 200, %d wrong, %d clients ended by the closed listener; memory during the burst %s; container %s, exit code %d, OOMKilled %v",
		conns, ok.Load(), bad.Load(), refused.Load(), strings.TrimSpace(string(usage)), state.Status, state.ExitCode, state.OOMKilled)
	if state.OOMKilled {
		t.Fatalf("drainproxy was OOM-killed in a 64 MiB container; the end of its log:\n%s", logs)
	}
	if state.ExitCode != 0 {
		t.Fatalf("drainproxy exited %d after docker stop, want 0 (a clean drain); the end of its log:\n%s", state.ExitCode, logs)
	}
	if bad.Load() > 0 {
		t.Fatalf("%d responses were not the app's 200 (first: %v)", bad.Load(), firstBad.Load())
	}
	if ok.Load() < conns {
		t.Fatalf("only %d responses for %d connections: the burst did not happen", ok.Load(), conns)
	}
}
