package main

// The command line as a user meets it, through the built binary: configuration errors that
// point at file:line:col, flags that override the file, -version, -check, and a port that
// is already taken.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliWriteConfig writes an HCL config file into the test's temporary directory.
func cliWriteConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "drainproxy.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliNamedUpstream serves an upstream that answers every request with its name.
func cliNamedUpstream(t *testing.T, name string) string {
	t.Helper()
	return "http://" + serveUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
}

// cliGet returns the body of GET url, failing unless the answer is 200. It keeps no
// connection open, so that nothing carries over to the next proxy on the same address.
func cliGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", url, resp.StatusCode, body, err)
	}
	return string(body)
}

// cliBadConfigs are config files with one mistake each, and where the error must point.
var cliBadConfigs = []struct {
	name      string
	src       string
	line, col int
	says      string
}{
	{
		name: "unknown attribute",
		src: `upstream {
  url = "http://127.0.0.1:3000"
  dial_timeuot = "5s"
}
`,
		line: 3, col: 3, says: "dial_timeuot",
	},
	{
		name: "bad duration",
		src: `# a comment first, so the line is not the block's

upstream {
  url          = "http://127.0.0.1:3000"
  dial_timeout = "5 parsecs"
}
`,
		line: 5, col: 18, says: "not a duration",
	},
	{
		name: "bad URL",
		src: `listener {
  address = "127.0.0.1:0"
}
upstream {
  url = "127.0.0.1:3000"
}
`,
		line: 5, col: 9, says: "no scheme",
	},
}

func TestCLIConfigErrorsPointAtTheLine(t *testing.T) {
	for _, tc := range cliBadConfigs {
		t.Run(tc.name, func(t *testing.T) {
			path := cliWriteConfig(t, tc.src)
			code, out := runBinary(t, "-config", path)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; output:\n%s", code, exitUsage, out)
			}
			where := fmt.Sprintf("%s:%d:%d:", path, tc.line, tc.col)
			if !strings.Contains(out, where) {
				t.Errorf("output does not point at %s:\n%s", where, out)
			}
			if !strings.Contains(out, tc.says) {
				t.Errorf("output does not say %q:\n%s", tc.says, out)
			}
		})
	}
}

func TestCLICheck(t *testing.T) {
	t.Run("good file", func(t *testing.T) {
		path := cliWriteConfig(t, `listener {
  address = "127.0.0.1:0"
}
upstream {
  url          = "http://127.0.0.1:3000"
  dial_timeout = "2s"
}
`)
		code, out := runBinary(t, "-config", path, "-check")
		if code != exitOK {
			t.Fatalf("exit code %d, want 0; output:\n%s", code, out)
		}
		if !strings.Contains(out, "configuration is valid") || !strings.Contains(out, path) {
			t.Errorf("output does not say %s is valid:\n%s", path, out)
		}
	})
	for _, tc := range cliBadConfigs {
		t.Run(tc.name, func(t *testing.T) {
			path := cliWriteConfig(t, tc.src)
			code, out := runBinary(t, "-config", path, "-check")
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; output:\n%s", code, exitUsage, out)
			}
			if where := fmt.Sprintf("%s:%d:", path, tc.line); !strings.Contains(out, where) {
				t.Errorf("output does not point at %s:\n%s", where, out)
			}
		})
	}
}

func TestCLIFlagsOverrideFile(t *testing.T) {
	fileUpstream := cliNamedUpstream(t, "X")
	flagUpstream := cliNamedUpstream(t, "Y")
	listenA := freeAddr(t)
	path := cliWriteConfig(t, fmt.Sprintf(`listener {
  address = %q
}
upstream {
  url = %q
}
admin {
  address = "off"
}
`, listenA, fileUpstream))

	t.Run("file alone", func(t *testing.T) {
		p := startProxy(t, "-config", path)
		if p.Addr != listenA {
			t.Errorf("listening on %s, want the file's %s", p.Addr, listenA)
		}
		if got := cliGet(t, "http://"+listenA+"/"); got != "X" {
			t.Errorf("the file's upstream X was not used: got %q", got)
		}
	})
	t.Run("upstream flag", func(t *testing.T) {
		p := startProxy(t, "-config", path, "-upstream", flagUpstream)
		if p.Addr != listenA {
			t.Errorf("listening on %s, want the file's %s", p.Addr, listenA)
		}
		if got := cliGet(t, "http://"+listenA+"/"); got != "Y" {
			t.Errorf("-upstream did not win over the file: the request reached %q, want Y", got)
		}
	})
	t.Run("listen flag", func(t *testing.T) {
		p := startProxy(t, "-config", path, "-listen", "127.0.0.1:0")
		if p.Addr == listenA || p.Addr == "" {
			t.Errorf("listening on %q, want a fresh port in place of the file's %s", p.Addr, listenA)
		}
		if got := cliGet(t, p.URL()+"/"); got != "X" {
			t.Errorf("got %q, want the file's upstream X", got)
		}
	})
}

func TestCLIFlagsAlone(t *testing.T) {
	up := cliNamedUpstream(t, "flags only")
	p := startProxy(t, "-upstream", up, "-grace", "5s", "-admin", "off")
	start := p.WaitLog("drainproxy starting", time.Second)
	if start["config"] != "flags" || start["upstream"] != up {
		t.Errorf("startup line %v: want config=flags upstream=%s", start, up)
	}
	if got := cliGet(t, p.URL()+"/"); got != "flags only" {
		t.Errorf("got %q, want the upstream's answer", got)
	}
}

func TestCLIVersion(t *testing.T) {
	code, out := runBinary(t, "-version")
	if code != exitOK || !strings.HasPrefix(out, "drainproxy ") || !strings.Contains(out, "(commit ") {
		t.Errorf("-version: exit %d, output %q; want 0, the version and the commit", code, out)
	}
}

func TestCLIPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	addr := taken.Addr().String()
	code, out := runBinary(t, "-listen", addr, "-upstream", startUpstream(t), "-admin", "off")
	if code != exitFailure {
		t.Errorf("exit code %d, want %d; output:\n%s", code, exitFailure, out)
	}
	if !strings.Contains(out, addr) || !strings.Contains(out, "in use") {
		t.Errorf("output does not say %s is in use:\n%s", addr, out)
	}
}
