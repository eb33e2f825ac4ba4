package containers

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// drainproxy as PID 1 of an app container (the wrapped image of examples/wrap), with an
// app that leaves orphans behind: each is re-parented to PID 1 and must be reaped there,
// not left a zombie. Then docker stop (SIGTERM to PID 1 only) drains a slow request and
// only after it stops the app; exit code 0.
func TestWrapPID1(t *testing.T) {
	im := needImages(t)
	id := "dpt-pid1-" + randomID()
	net := newNetwork(t, id)
	name := id + "-app"
	run(t, name, "--network", net, "--entrypoint", "/usr/local/bin/drainproxy", im.testapp,
		"-listen", ":8080", "-admin", ":9901", "-upstream", "http://127.0.0.1:3000",
		"-drain-delay", "1s", "-grace", "20s", "-log-format", "json",
		"--", "/testapp", "-orphan", "3s", "-log-requests")
	ip := containerIP(t, name)
	waitStatus(t, "http://"+ip+":9901/readyz", 200)

	logs := waitLog(t, name, "testapp: orphan pid ")
	if !strings.Contains(logs, `"pid":1`) {
		t.Errorf("drainproxy is not PID 1 of the container:\n%s", logs)
	}
	m := regexp.MustCompile(`testapp: orphan pid (\d+)`).FindStringSubmatch(logs)
	orphan, _ := strconv.Atoi(m[1])
	initPid := docker(t, "inspect", "-f", "{{.State.Pid}}", name)

	// The orphan, seen from the host: a child of the container's PID 1 while it sleeps...
	hostPid := ""
	for deadline := time.Now().Add(10 * time.Second); hostPid == "" && time.Now().Before(deadline); {
		hostPid = findInNamespace(initPid, orphan)
		if hostPid == "" {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if hostPid == "" {
		t.Fatalf("the orphan (pid %d in the container) never showed up as a child of PID 1 (host pid %s)", orphan, initPid)
	}
	// ... and gone once it has exited: reaped, not a zombie.
	state := ""
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		state = procState(hostPid)
		if state == "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if state != "" {
		t.Fatalf("the orphan (host pid %s) is still there in state %q 12s after its 3s were up: PID 1 does not reap", hostPid, state)
	}

	// The image's HEALTHCHECK (drainproxy probe .../readyz) runs every 5s.
	for deadline := time.Now().Add(30 * time.Second); ; {
		h := docker(t, "inspect", "-f", "{{.State.Health.Status}}", name)
		if h == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image's HEALTHCHECK says %q after 30s", h)
		}
		time.Sleep(100 * time.Millisecond)
	}

	slow := slowRequests(ip+":8080", 1, 3*time.Second)
	waitLog(t, name, "testapp: request GET /slow?d=3s")
	docker(t, "stop", "-t", "30", name)
	if failed := collect(slow, 1); len(failed) > 0 {
		t.Errorf("the slow request in flight at docker stop failed: %v", failed)
	}
	if code := exitCode(t, name); code != "0" {
		t.Errorf("exit code after docker stop = %s, want 0", code)
	}
	logs, _ = dockerErr("logs", name)
	checkDrainLog(t, logs)
	finished := strings.Index(logs, `"in-flight requests finished"`)
	stopped := strings.Index(logs, `"app stopped"`)
	if finished < 0 || stopped < 0 || finished > stopped {
		t.Errorf("want the drain to finish before the app is stopped (in-flight at %d, app stopped at %d):\n%s", finished, stopped, logs)
	}
}

// findInNamespace returns the host pid of the process that is pid nsPid in its own pid
// namespace and a child of host pid parent, or "".
func findInNamespace(parent string, nsPid int) string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var ppid, nspid string
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(v)
				nspid = f[len(f)-1]
			}
		}
		if ppid == parent && nspid == strconv.Itoa(nsPid) {
			return e.Name()
		}
	}
	return ""
}

// procState is the State line of a host process ("S (sleeping)", "Z (zombie)"), or ""
// once it no longer exists.
func procState(pid string) string {
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
