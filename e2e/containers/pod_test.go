package containers

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A pod under Docker: a "pause" container holds the network namespace (nothing can be
// pulled, so the stand-in serves as one), the pod's containers join it
// (--network container:), emptyDir volumes are host directories, and init containers run
// to completion first. The pod IP is the pause container's address on the test's network.
type pod struct {
	t          *testing.T
	id         string
	spec       podSpec
	ip         string
	containers map[string]string // container name in the manifest -> docker name
}

// images maps the manifests' image names to this run's tags.
func (im images) resolve(t *testing.T, image string) string {
	t.Helper()
	switch image {
	case "drainproxy:latest":
		return im.proxy
	case "drainproxy-standin:latest":
		return im.standin
	case "drainproxy-standin-wrapped:latest":
		return im.wrapped
	}
	t.Fatalf("the manifest names image %q, which scripts/image does not build", image)
	return ""
}

func startPod(t *testing.T, im images, name string, spec podSpec) *pod {
	t.Helper()
	p := &pod{t: t, id: "dpt-pod-" + name + "-" + randomID(), spec: spec, containers: map[string]string{}}
	net := newNetwork(t, p.id)
	pause := p.id + "-pause"
	run(t, pause, "--network", net, im.standin, "-listen", "127.0.0.1:39999")
	p.ip = containerIP(t, pause)

	volumes := map[string]string{}
	for _, v := range spec.Volumes {
		if v.EmptyDir == nil {
			t.Fatalf("volume %s: only emptyDir is simulated", v.Name)
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o777); err != nil { // as kubelet makes an emptyDir
			t.Fatal(err)
		}
		volumes[v.Name] = dir
	}
	dockerArgs := func(c container) []string {
		args := []string{"--network", "container:" + pause}
		for _, m := range c.VolumeMounts {
			bind := volumes[m.Name] + ":" + m.MountPath
			if m.ReadOnly {
				bind += ":ro"
			}
			args = append(args, "-v", bind)
		}
		argv := c.argv()
		if len(c.Command) > 0 {
			args = append(args, "--entrypoint", argv[0])
			argv = argv[1:]
		}
		return append(append(args, im.resolve(t, c.Image)), argv...)
	}
	for _, c := range spec.InitContainers {
		if c.isSidecar() { // native sidecar: started, not run to completion (native_sidecar_test.go)
			p.startSidecar(c, dockerArgs(c))
			continue
		}
		name := p.id + "-init-" + c.Name
		out := docker(t, append([]string{"run", "--name", name}, dockerArgs(c)...)...)
		dockerErr("rm", name)
		t.Logf("init container %s: %s", c.Name, out)
	}
	for _, c := range spec.Containers {
		name := p.id + "-" + c.Name
		run(t, name, dockerArgs(c)...)
		p.containers[c.Name] = name
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if rp := c.ReadinessProbe; rp != nil && rp.HTTPGet != nil {
			port, err := c.port(rp.HTTPGet.Port)
			if err != nil {
				t.Fatal(err)
			}
			waitStatus(t, fmt.Sprintf("http://%s:%d%s", p.ip, port, rp.HTTPGet.Path), 200)
		}
	}
	return p
}

// termination is what kubelet's deletion of the pod did, container by container.
type termination struct {
	mu      sync.Mutex
	hooks   map[string]string // container -> "200 drained (took 5.1s)"
	killed  []string          // containers that needed SIGKILL at the grace period
	codes   map[string]string // exit codes
	hookErr []string
}

// terminate deletes the pod as kubelet does: for every container in parallel, its
// preStop hook (an httpGet on the pod IP, which the test sends itself), then SIGTERM;
// SIGKILL to whatever still runs terminationGracePeriodSeconds after the start.
func (p *pod) terminate() *termination {
	if p.spec.hasSidecars() { // as kubelet: ordered termination only with native sidecars
		return p.terminateNative()
	}
	t := p.t
	tr := &termination{hooks: map[string]string{}, codes: map[string]string{}}
	grace := time.Duration(p.spec.TerminationGracePeriodSeconds) * time.Second
	if grace == 0 {
		grace = 30 * time.Second // Kubernetes' default
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range p.spec.Containers {
		name := p.containers[c.Name]
		wg.Go(func() {
			if h := c.preStop(); h != nil {
				port, err := c.port(h.Port)
				if err != nil {
					t.Error(err)
					return
				}
				client := &http.Client{Timeout: grace}
				hookStart := time.Now()
				resp, err := client.Get(fmt.Sprintf("http://%s:%d%s", p.ip, port, h.Path))
				tr.mu.Lock()
				if err != nil {
					tr.hookErr = append(tr.hookErr, c.Name+": "+err.Error()) // kubelet goes on
				} else {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					tr.hooks[c.Name] = fmt.Sprintf("%d %s (took %s)", resp.StatusCode,
						strings.TrimSpace(string(body)), time.Since(hookStart).Round(10*time.Millisecond))
				}
				tr.mu.Unlock()
			}
			dockerErr("kill", "-s", "TERM", name) // fails harmlessly if it has exited
			done := make(chan struct{})
			go func() { dockerErr("wait", name); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Until(start.Add(grace))):
				dockerErr("kill", "-s", "KILL", name)
				<-done
				tr.mu.Lock()
				tr.killed = append(tr.killed, c.Name)
				tr.mu.Unlock()
			}
			code, _ := dockerErr("inspect", "-f", "{{.State.ExitCode}}", name)
			tr.mu.Lock()
			tr.codes[c.Name] = code
			tr.mu.Unlock()
		})
	}
	wg.Wait()
	return tr
}

// propagation is how long after the deletion began the client keeps opening new
// connections to the pod, as kube-proxy and ingress controllers do until the endpoint
// removal reaches them. It must be shorter than the manifests' drain delay.
const propagation = 3 * time.Second

// Kubelet deletes a pod while a client keeps sending, and keeps opening new connections
// for a few seconds: 0 failed with each recipe of examples/kubernetes (the wrap-image one
// runs the image scripts/image builds from examples/wrap/Dockerfile), and the naive
// recipe (no preStop: both containers get SIGTERM together and the app dies at once)
// loses requests, so this test can tell them apart.
func TestPod(t *testing.T) {
	im := needImages(t)
	naive := loadDeployment(t, "two-containers.yaml")
	naive.Containers = append([]container(nil), naive.Containers...)
	for i := range naive.Containers {
		naive.Containers[i].Lifecycle = nil
	}
	for _, tt := range []struct {
		name     string
		spec     podSpec
		lossless bool
	}{
		{"two-containers", loadDeployment(t, "two-containers.yaml"), true},
		{"wrap-emptydir", loadDeployment(t, "wrap-emptydir.yaml"), true},
		{"wrap-image", loadDeployment(t, "wrap-image.yaml"), true},
		{"naive", naive, false},
		{"native-sidecar", loadDeployment(t, "native-sidecar.yaml"), true},
		{"native-sidecar-no-hooks", withoutHooks(loadDeployment(t, "native-sidecar.yaml")), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dp, ok := tt.spec.drainproxy()
			if !ok { // wrap-image: the flags are in the image's ENTRYPOINT
				dp = tt.spec.Containers[0]
				dp.Command = wrapEntrypoint(t)
			}
			if delay := mustDuration(t, "-drain-delay", dp.flag("-drain-delay")); delay < propagation+time.Second {
				t.Fatalf("the manifest's drain delay %s does not cover the simulated propagation %s", delay, propagation)
			}
			p := startPod(t, im, tt.name, tt.spec)
			addr := p.ip + ":8080"

			var began time.Time
			var mu sync.Mutex
			allowNew := func() bool {
				mu.Lock()
				defer mu.Unlock()
				return began.IsZero() || time.Since(began) < propagation
			}
			l := startLoad(addr, 4, allowNew)
			defer l.finish()
			for deadline := time.Now().Add(30 * time.Second); l.ok.Load() < 200; {
				if time.Now().After(deadline) {
					t.Fatalf("the load does not get through: %s", l)
				}
				time.Sleep(10 * time.Millisecond)
			}
			slow := slowRequests(addr, 3, 4*time.Second)
			// New connections from inside the pod's network all through the termination:
			// served, then refused once drainproxy has stopped accepting (and after it exits).
			fresh := startNewConns("the pod network", addr)
			defer fresh.finish()
			mu.Lock()
			began = time.Now()
			mu.Unlock()
			okBefore := l.ok.Load()
			tr := p.terminate()
			fresh.finish()
			l.wg.Wait() // the workers end by themselves: no new connections after propagation
			slowFailed := collect(slow, 3)
			t.Logf("%s: load %s (ok before deletion %d); hooks %v %v; exit codes %v; SIGKILLed %v; slow failed %d/3",
				tt.name, l, okBefore, tr.hooks, tr.hookErr, tr.codes, tr.killed, len(slowFailed))

			if !tt.lossless {
				t.Log("new connections: " + fresh.String())
				if l.failed() == 0 && len(slowFailed) == 0 {
					t.Errorf("the naive recipe lost nothing: this simulation cannot tell a lossless recipe from a lossy one")
				}
				return
			}
			if l.failed() != 0 {
				t.Errorf("%d requests failed", l.failed())
			}
			fresh.check(t)
			logs, _ := dockerErr("logs", p.containers[dp.Name])
			checkDrainLog(t, logs)
			if len(slowFailed) > 0 {
				t.Errorf("slow requests failed: %v", slowFailed)
			}
			if l.ok.Load()-okBefore < 50 {
				t.Errorf("only %d requests were served after the deletion began: the client did not keep sending", l.ok.Load()-okBefore)
			}
			if len(tr.killed) > 0 {
				t.Errorf("containers needed SIGKILL at the grace period: %v", tr.killed)
			}
			if code := tr.codes[dp.Name]; code != "0" {
				t.Errorf("drainproxy's container exited %s, want 0", code)
			}
			for name, h := range tr.hooks {
				if !strings.HasPrefix(h, "200 drained") {
					t.Errorf("preStop of %s answered %s, want 200 drained (it must wait for the drain)", name, h)
				}
			}
			if len(tr.hookErr) > 0 {
				t.Errorf("preStop hooks failed: %v", tr.hookErr)
			}
		})
	}
}
