package containers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The parts of a Deployment the pod simulation (TestPod) runs. No cluster answers here:
// the manifests are parsed and their values are the ones the simulation uses.
type deployment struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
	Volumes                       []volume    `yaml:"volumes"`
	InitContainers                []container `yaml:"initContainers"`
	Containers                    []container `yaml:"containers"`
}

type volume struct {
	Name     string    `yaml:"name"`
	EmptyDir *struct{} `yaml:"emptyDir"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	// RestartPolicy "Always" on an init container makes it a native sidecar (KEP-753).
	RestartPolicy string `yaml:"restartPolicy"`
	Lifecycle     *struct {
		PreStop *struct {
			HTTPGet *httpGet `yaml:"httpGet"`
			Exec    *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	ReadinessProbe *struct {
		HTTPGet *httpGet `yaml:"httpGet"`
	} `yaml:"readinessProbe"`
	StartupProbe *struct {
		HTTPGet *httpGet `yaml:"httpGet"`
	} `yaml:"startupProbe"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type httpGet struct {
	Path string `yaml:"path"`
	Port string `yaml:"port"` // a number or a port name
}

// port resolves a probe's or hook's port (a number or the name of a container port).
func (c container) port(p string) (int, error) {
	if n, err := strconv.Atoi(p); err == nil {
		return n, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p)
}

func (c container) preStop() *httpGet {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return nil
	}
	return c.Lifecycle.PreStop.HTTPGet
}

// argv is the container's process: command replaces the image's entrypoint.
func (c container) argv() []string { return append(slices.Clone(c.Command), c.Args...) }

// flag is the value of a drainproxy flag in the container's command line ("" if absent),
// up to a "--" that starts the app's own command.
func (c container) flag(name string) string {
	argv := c.argv()
	for i, a := range argv {
		if a == "--" {
			break
		}
		if a == name && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// drainproxy is the container that runs drainproxy (by its -upstream flag), a native
// sidecar among the init containers included.
func (s podSpec) drainproxy() (container, bool) {
	for _, c := range append(slices.Clone(s.InitContainers), s.Containers...) {
		if c.flag("-upstream") != "" {
			return c, true
		}
	}
	return container{}, false
}

func loadDeployment(t *testing.T, file string) podSpec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "kubernetes", file))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d deployment
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if d.Kind == "Deployment" {
			return d.Spec.Template.Spec
		}
	}
	t.Fatalf("%s has no Deployment", file)
	return podSpec{}
}

func mustDuration(t *testing.T, what, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s %q: %v", what, s, err)
	}
	return d
}

// Every manifest: drainproxy's admin listener is reachable on the pod IP for kubelet, the
// readiness probe asks /readyz there, a preStop hook asks /drained there, and the grace
// period covers delay + grace + the app's stop + a margin. Runs without Docker.
func TestManifests(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot(), "examples", "kubernetes", "*.yaml"))
	if len(files) < 3 {
		t.Fatalf("examples/kubernetes has %d manifests, want the three recipes", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			spec := loadDeployment(t, filepath.Base(f))
			var dp container
			var ok bool
			if dp, ok = spec.drainproxy(); !ok && !strings.Contains(f, "wrap-image") {
				t.Fatal("no container runs drainproxy (no -upstream flag)")
			}
			if strings.Contains(f, "wrap-image") {
				// The flags are in the image (examples/wrap/Dockerfile).
				dp = spec.Containers[0]
				dp.Command = wrapEntrypoint(t)
			}
			admin := dp.flag("-admin")
			if !strings.HasPrefix(admin, ":") && !strings.HasPrefix(admin, "0.0.0.0:") {
				t.Errorf("-admin %q: kubelet probes the pod IP, so the admin listener must be on every address", admin)
			}
			adminPort := admin[strings.LastIndex(admin, ":")+1:]
			delay := mustDuration(t, "-drain-delay", dp.flag("-drain-delay"))
			grace := mustDuration(t, "-grace", dp.flag("-grace"))
			appStop := 5 * time.Second // the stand-in dies at once; a margin for real apps
			if slices.Contains(dp.argv(), "--") {
				appStop = 10 * time.Second // app.stop_timeout's default
			}
			if delay < 5*time.Second {
				t.Errorf("-drain-delay %s: endpoint removal takes seconds to propagate; use 5s", delay)
			}
			if need := delay + grace + appStop + 5*time.Second; time.Duration(spec.TerminationGracePeriodSeconds)*time.Second < need {
				t.Errorf("terminationGracePeriodSeconds %d < drain delay + grace + app stop + 5s = %s",
					spec.TerminationGracePeriodSeconds, need)
			}
			rp := dp.ReadinessProbe
			if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" {
				t.Fatalf("drainproxy's container has no readinessProbe httpGet /readyz")
			}
			if p, err := dp.port(rp.HTTPGet.Port); err != nil || strconv.Itoa(p) != adminPort {
				t.Errorf("readinessProbe on port %s (%v), admin listener on %s", rp.HTTPGet.Port, err, adminPort)
			}
			for _, c := range spec.Containers {
				if h := c.preStop(); h != nil {
					if h.Path != "/drained" || h.Port != adminPort {
						t.Errorf("container %s: preStop httpGet %s on %s, want /drained on the admin port %s", c.Name, h.Path, h.Port, adminPort)
					}
				}
			}
			if strings.Contains(f, "native-sidecar") {
				checkNativeSidecar(t, spec, dp)
			}
			if strings.Contains(f, "two-containers") {
				app := spec.Containers[0]
				if app.preStop() == nil {
					t.Errorf("the app container (%s) has no preStop hook: kubelet would stop it while drainproxy drains", app.Name)
				}
			}
		})
	}
}

// wrapEntrypoint reads the ENTRYPOINT of examples/wrap/Dockerfile (JSON form, maybe on
// several lines).
func wrapEntrypoint(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "wrap", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "ENTRYPOINT "); ok {
			var argv []string
			if err := yaml.Unmarshal([]byte(v), &argv); err != nil {
				t.Fatalf("ENTRYPOINT %s: %v", v, err)
			}
			return argv
		}
	}
	t.Fatal("examples/wrap/Dockerfile has no ENTRYPOINT")
	return nil
}
