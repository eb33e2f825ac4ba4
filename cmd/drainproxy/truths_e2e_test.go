package main

// Small truths (issue 13.12): what drainproxy reports follows a zero-downtime restart, a
// failed restart says what happened in plain words, and every JSON log key keeps one type.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// durationKeys are the log keys that carry a duration: always a string that
// time.ParseDuration reads ("1.5s"), never integer nanoseconds.
var durationKeys = []string{"took", "ran", "backoff", "interval", "timeout", "grace", "window",
	"stop_timeout", "start_timeout", "delay", "idle_close"}

// One supervised run through a crash and its policy restart, a zero-downtime restart, a
// failed one and a drain:
//   - /status and the access log name the new instance's upstream after the switch;
//   - the failed restart's line says which instance ended and how, with its real pid;
//   - every JSON log key has one JSON type, and durations are strings.
func TestRestartReportsTheTruth(t *testing.T) {
	_, testappBin := supApps(t)
	port := supPort(t)
	dir := t.TempDir()
	crashOnce, dieAtStart := filepath.Join(dir, "crashed-once"), filepath.Join(dir, "die-at-start")
	accessLog := filepath.Join(dir, "access.log")
	flags := append(supConfig(t, `restart = "on-failure"`), "-access-log", accessLog)
	p := startProxy(t, supArgs(flags, port, testappBin,
		"-exit-once", crashOnce, "-exit-after", "300ms", "-exit-if", dieAtStart, "-exit-code", "7")...)
	supKillOnCleanup(t, supAppPid(t, p))
	p.WaitLog("app exited, restarting it", 10*time.Second)
	waitFor(t, 10*time.Second, func() bool { code, _ := getReadyz(t, p); return code == 200 })
	second := restartPid(t, p)
	supKillOnCleanup(t, second)

	// A zero-downtime restart that succeeds.
	p.Signal(syscall.SIGHUP)
	switched := p.WaitLog("app restart: switched", 20*time.Second)
	newUpstream, _ := switched["upstream"].(string)
	if newUpstream == "" || strings.HasSuffix(newUpstream, ":"+port) {
		t.Fatalf("switched line %v: want the new instance's upstream on a port of its own", switched)
	}
	third := restartLogPid(t, p, "app restart: switched", "pid", time.Second)
	supKillOnCleanup(t, third)
	p.WaitLog("app restart: old instance stopped", 20*time.Second)
	if pid := restartPid(t, p); pid != third {
		t.Fatalf("GET /pid = %d after the switch, want the new instance's %d", pid, third)
	}
	var st struct{ Upstream struct{ URL string } }
	statusJSON(t, p, &st)
	if st.Upstream.URL != newUpstream {
		t.Errorf("/status upstream.url = %q after the switch, want the new instance's %q", st.Upstream.URL, newUpstream)
	}

	// A restart whose new instance dies at start.
	if err := os.WriteFile(dieAtStart, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	started := p.waitLogWhere("app restart: new instance started", 20*time.Second, func(m map[string]any) bool { return m["pid"] != float64(third) })
	fourth := int(started["pid"].(float64))
	failed := p.WaitLog("app restart failed; the old instance keeps serving", 20*time.Second)
	msg, _ := failed["error"].(string)
	// restart = "on-failure" restarts the new instance too, until it gives up.
	if want := fmt.Sprintf("the new instance (pid %d) exited ", fourth); !strings.Contains(msg, want) || !strings.Contains(msg, "exit code 7") {
		t.Errorf("failure line %v: want its error to say %q... \"exit code 7\"", failed, want)
	}
	if strings.Contains(msg, "it app") || failed["new_pid"] != float64(fourth) || failed["old_pid"] != float64(third) {
		t.Errorf("failure line %v: want plain words and new_pid=%d old_pid=%d", failed, fourth, third)
	}
	if gone := p.FindLog("app restart: new instance is gone", 10*time.Second); gone == nil || gone["pid"] != float64(fourth) {
		t.Errorf("line %v: want the failed instance's pid %d, not 0", gone, fourth)
	}
	if pid := restartPid(t, p); pid != third {
		t.Errorf("GET /pid = %d after the failed restart, want the serving instance's %d", pid, third)
	}
	restartStopAndCheck(t, p, second, third, fourth)

	// The access log: the request after the switch names the new instance.
	f, err := os.Open(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ups []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct{ Path, Upstream string }
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		if line.Path == "/pid" {
			ups = append(ups, line.Upstream)
		}
	}
	if len(ups) != 3 || ups[0] != "http://127.0.0.1:"+port || ups[1] != newUpstream || ups[2] != newUpstream {
		t.Errorf("access log upstreams of GET /pid = %q; want the first instance's, then %q twice", ups, newUpstream)
	}

	// Every JSON line of this run: one type per key, durations as strings.
	var types keyTypes
	p.mu.Lock()
	lines := append([]string(nil), p.raw...)
	p.mu.Unlock()
	jsonLines := 0
	for _, raw := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(raw), &m) != nil {
			continue // the app's own output, passed through
		}
		jsonLines++
		types.record(m)
		for _, k := range durationKeys {
			v, ok := m[k]
			if !ok {
				continue
			}
			if s, isString := v.(string); !isString {
				t.Errorf("%q: %s = %v (%T); want a duration string", m["@message"], k, v, v)
			} else if _, err := time.ParseDuration(s); err != nil {
				t.Errorf("%q: %s = %q is not a duration", m["@message"], k, s)
			}
		}
	}
	if c := types.conflicts(); c != "" {
		t.Errorf("JSON log keys with more than one type:\n%s", c)
	}
	if jsonLines < 30 {
		t.Errorf("only %d JSON log lines; the run should have logged its lifecycle", jsonLines)
	}
}

// statusJSON decodes GET /status into v.
func statusJSON(t *testing.T, p *proc, v any) {
	t.Helper()
	resp, err := http.Get("http://" + p.Admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
