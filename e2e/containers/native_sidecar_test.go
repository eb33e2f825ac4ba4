package containers

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Native sidecars (KEP-753, GA in Kubernetes 1.33): init containers with restartPolicy:
// Always. Kubelet starts them in order before the main containers (the next one once the
// sidecar has started: its startupProbe passed), and at deletion stops them in its own
// order (pkg/kubelet/kuberuntime: killContainersWithSyncResult runs killContainer for
// every container at once; killContainer runs the preStop hook, then
// terminationOrdering.waitForTurn, then StopContainer):
//
//   - every container's preStop hook runs at once, sidecars' included;
//   - a main container gets SIGTERM as soon as its own preStop has returned;
//   - a sidecar gets SIGTERM once its preStop has returned, every main container has
//     exited and every sidecar after it has exited (reverse order);
//   - SIGKILL at the grace period.

func (c container) isSidecar() bool { return c.RestartPolicy == "Always" }

func (s podSpec) hasSidecars() bool {
	return slices.ContainsFunc(s.InitContainers, container.isSidecar)
}

// startSidecar starts a native sidecar and waits until it has started (its startupProbe
// passes), as kubelet does before it starts the next container.
func (p *pod) startSidecar(c container, args []string) {
	t := p.t
	name := p.id + "-" + c.Name
	run(t, name, args...)
	p.containers[c.Name] = name
	if sp := c.StartupProbe; sp != nil && sp.HTTPGet != nil {
		port, err := c.port(sp.HTTPGet.Port)
		if err != nil {
			t.Fatal(err)
		}
		waitStatus(t, fmt.Sprintf("http://%s:%d%s", p.ip, port, sp.HTTPGet.Path), 200)
	}
}

// withoutHooks is spec with no preStop hook on any container: kubelet's native order alone.
func withoutHooks(spec podSpec) podSpec {
	strip := func(cs []container) []container {
		cs = slices.Clone(cs)
		for i := range cs {
			cs[i].Lifecycle = nil
		}
		return cs
	}
	spec.InitContainers = strip(spec.InitContainers)
	spec.Containers = strip(spec.Containers)
	return spec
}

// terminateNative deletes the pod as kubelet does when it has native sidecars (above).
// A sidecar that exits before kubelet sends it SIGTERM fails the test: kubelet would not
// expect it (KEP-753 restarts such a sidecar; the kubelet of today leaves the pod without
// its proxy), so drainproxy must hold after a drain its preStop started.
func (p *pod) terminateNative() *termination {
	t := p.t
	tr := &termination{hooks: map[string]string{}, codes: map[string]string{}}
	grace := time.Duration(p.spec.TerminationGracePeriodSeconds) * time.Second
	if grace == 0 {
		grace = 30 * time.Second
	}
	start := time.Now()
	killAt := start.Add(grace)

	// stop runs c's preStop, waits for its turn, sends SIGTERM, then SIGKILL at the grace
	// period, and records the outcome.
	stop := func(c container, turn <-chan struct{}) {
		name := p.containers[c.Name]
		p.preStop(tr, c, name, killAt)
		select {
		case <-turn:
		case <-time.After(time.Until(killAt)):
		}
		if c.isSidecar() {
			if running, _ := dockerErr("inspect", "-f", "{{.State.Running}}", name); running != "true" {
				code, _ := dockerErr("inspect", "-f", "{{.State.ExitCode}}", name)
				t.Errorf("native sidecar %s exited (code %s) %s into the deletion, before kubelet's SIGTERM: kubelet does not expect a sidecar to exit before its turn",
					c.Name, code, time.Since(start).Round(10*time.Millisecond))
			}
		}
		dockerErr("kill", "-s", "TERM", name) // fails harmlessly if it has exited
		done := make(chan struct{})
		go func() { dockerErr("wait", name); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(killAt)):
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
		t.Logf("%s exited %s after the deletion began, code %s", c.Name, time.Since(start).Round(10*time.Millisecond), code)
	}

	var mains, all sync.WaitGroup
	now := make(chan struct{})
	close(now)
	for _, c := range p.spec.Containers {
		mains.Go(func() { stop(c, now) })
	}
	mainsExited := make(chan struct{})
	go func() { mains.Wait(); close(mainsExited) }()
	// Sidecars in reverse order: each waits for the main containers and the later sidecar.
	prev := mainsExited
	sidecars := slices.DeleteFunc(slices.Clone(p.spec.InitContainers), func(c container) bool { return !c.isSidecar() })
	for _, c := range slices.Backward(sidecars) {
		after, exited := prev, make(chan struct{})
		all.Go(func() {
			defer close(exited)
			turn := make(chan struct{})
			go func() {
				<-mainsExited
				<-after
				close(turn)
			}()
			stop(c, turn)
		})
		prev = exited
	}
	mains.Wait()
	all.Wait()
	return tr
}

// preStop runs c's preStop hook as kubelet does: httpGet on the pod IP, exec inside the
// container; kubelet goes on with the SIGTERM whatever the hook's outcome, and gives up on
// it at the grace period.
func (p *pod) preStop(tr *termination, c container, name string, killAt time.Time) {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return
	}
	hookStart := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), killAt)
	defer cancel()
	if h := c.Lifecycle.PreStop.HTTPGet; h != nil {
		port, err := c.port(h.Port)
		if err != nil {
			p.t.Error(err)
			return
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", p.ip, port, h.Path), nil)
		resp, err := http.DefaultClient.Do(req)
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if err != nil {
			tr.hookErr = append(tr.hookErr, c.Name+": "+err.Error())
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.hooks[c.Name] = fmt.Sprintf("%d %s (took %s)", resp.StatusCode,
			strings.TrimSpace(string(body)), time.Since(hookStart).Round(10*time.Millisecond))
		return
	}
	if e := c.Lifecycle.PreStop.Exec; e != nil {
		out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", name}, e.Command...)...).CombinedOutput()
		took := time.Since(hookStart).Round(10 * time.Millisecond)
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if err != nil {
			tr.hookErr = append(tr.hookErr, fmt.Sprintf("%s: exec %v: %v after %s: %s", c.Name, e.Command, err, took, strings.TrimSpace(string(out))))
			return
		}
		p.t.Logf("preStop of %s: exec %v exited 0 after %s: %s", c.Name, e.Command, took, strings.TrimSpace(string(out)))
	}
}

// checkNativeSidecar checks examples/kubernetes/native-sidecar.yaml beyond what every
// manifest must have (TestManifests): drainproxy is a native sidecar whose preStop starts
// the drain with `drainproxy drain -wait`, it starts before the app (startupProbe), and
// the app's preStop waits for that drain on the admin port.
func checkNativeSidecar(t *testing.T, spec podSpec, dp container) {
	t.Helper()
	if !slices.ContainsFunc(spec.InitContainers, func(c container) bool { return c.Name == dp.Name }) || !dp.isSidecar() {
		t.Errorf("drainproxy (%s) is not an init container with restartPolicy: Always", dp.Name)
	}
	if dp.Lifecycle == nil || dp.Lifecycle.PreStop == nil || dp.Lifecycle.PreStop.Exec == nil ||
		!slices.Equal(dp.Lifecycle.PreStop.Exec.Command, []string{"/drainproxy", "drain", "-wait"}) {
		t.Errorf("drainproxy's preStop is not exec [/drainproxy drain -wait]: kubelet sends a native sidecar SIGTERM only after the app has exited, so the drain must start from its preStop")
	}
	if sp := dp.StartupProbe; sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/healthz" {
		t.Errorf("drainproxy has no startupProbe on /healthz: the app could start (and be deleted) before drainproxy's admin listener answers its preStop")
	}
	for _, c := range spec.Containers {
		if c.preStop() == nil {
			t.Errorf("main container %s has no preStop httpGet /drained: kubelet would stop it at once, while drainproxy still sends it requests", c.Name)
		}
	}
}
