package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/supervise"
)

// writeConfig writes src to config.hcl in a fresh directory and returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// withDefaults returns Default() changed by edit, for comparing whole configs.
func withDefaults(edit func(c *Config)) *Config {
	c := Default()
	edit(c)
	return c
}

func TestParse(t *testing.T) {
	full := `
listener {
  address = ":80"
}
listener {
  address = "[::1]:8443"
}
upstream {
  url = "unix:///run/app.sock"
  command = ["./app", "--port", "3000"]
  dial_timeout = "1s"
  response_header_timeout = "2m"
  idle_conns = 16
  keepalive = false
  idle_conn_timeout = "30s"
  read_timeout = "45s"
  send_timeout = "15s"
  max_response_header_bytes = 8192
  max_requests = 64
  queue_timeout = "250ms"
}
proxy {
  host_header = "upstream"
  trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "fd00::/8", "::1"]
}
drain {
  delay = "5s"
  readiness_fail_delay = "5s"
  grace = "1m"
  idle_close = "250ms"
  handshake_wait = "1s"
  flush_timeout = "2s"
}
admin {
  address = "off"
  token = "s3cret-token"
}
app {
  stop_signal = "quit"
  stop_timeout = "3s"
  start_timeout = "1m"
  restart = "on-failure"
  max_restarts = 2
  restart_window = "30s"
  output_prefix = "app | "
  forward_signals = ["SIGUSR2", "WINCH"]
}
health_check {
  path = "/healthz"
  interval = "1s"
  timeout = "500ms"
  healthy_threshold = 1
  unhealthy_threshold = 5
}
log {
  level = "debug"
  format = "json"
  access_log = "/var/log/drainproxy/access.log"
  access_log_format = "combined"
  access_log_buffer = 64
  access_log_when_full = "drop"
}
limits {
  max_connections = 0
  max_header_bytes = 65536
  max_request_body_bytes = 10485760
  read_header_timeout = "3s"
  request_read_timeout = "1m"
  write_timeout = "2m"
  idle_timeout = "30s"
  send_timeout = "20s"
  client_body_timeout = "25s"
  upgrade_idle_timeout = "0s"
  h2_max_concurrent_streams = 32
  h2_window_timeout = "3s"
}
runtime {
  gc_heap_floor_bytes = 0
}
`
	fullPath := writeConfig(t, full)
	wantFull := func(c *Config) {
		c.Source = fullPath
		c.Listeners = []Listener{{Address: ":80"}, {Address: "[::1]:8443"}}
		c.Upstream = Upstream{
			URL:                   mustURL(t, "unix:///run/app.sock"),
			Command:               []string{"./app", "--port", "3000"},
			DialTimeout:           time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			IdleConns:             16,
			IdleConnTimeout:       30 * time.Second,
			ReadTimeout:           45 * time.Second,
			SendTimeout:           15 * time.Second,
			KeepAlive:             false,

			MaxResponseHeaderBytes: 8192,
			MaxRequests:            64,
			QueueTimeout:           250 * time.Millisecond,
		}
		c.Proxy = Proxy{HostHeader: "upstream", TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
			netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("::1/128"),
		}}
		c.Drain.Delay, c.Drain.ReadinessFailDelay, c.Drain.Grace, c.Drain.IdleClose, c.Drain.HandshakeWait, c.Drain.FlushTimeout = 5*time.Second, 5*time.Second, time.Minute, 250*time.Millisecond, time.Second, 2*time.Second
		c.Admin = Admin{Address: "", Token: "s3cret-token"}
		c.HealthCheck = HealthCheck{Path: "/healthz", Interval: time.Second, Timeout: 500 * time.Millisecond,
			HealthyThreshold: 1, UnhealthyThreshold: 5}
		c.App = App{StopSignal: syscall.SIGQUIT, StopTimeout: 3 * time.Second, StartTimeout: time.Minute,
			Restart: supervise.RestartOnFailure, MaxRestarts: 2, RestartWindow: 30 * time.Second,
			OutputPrefix: "app | ", ForwardSignals: []syscall.Signal{syscall.SIGUSR2, syscall.SIGWINCH}}
		c.Log = Log{Level: "debug", Format: "json", AccessLog: "/var/log/drainproxy/access.log",
			AccessLogFormat: "combined", AccessLogBuffer: 64, AccessLogWhenFull: "drop"}
		c.Limits = Limits{
			MaxConnections: 0, MaxHeaderBytes: 65536, MaxRequestBodyBytes: 10 << 20,
			ReadHeaderTimeout: 3 * time.Second, RequestReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute,
			IdleTimeout: 30 * time.Second, SendTimeout: 20 * time.Second, ClientBodyTimeout: 25 * time.Second,
			H2MaxConcurrentStreams: 32, H2WindowTimeout: 3 * time.Second,
		}
		c.Runtime = Runtime{GCHeapFloorBytes: 0}
	}

	partialPath := writeConfig(t, "upstream {\n  url = \"http://app:3000\"\n}\ndrain {\n  grace = \"10s\"\n}\n")
	autoPath := writeConfig(t, "upstream {\n  url = \"http://app:3000\"\n}\ndrain {\n  delay = \"auto\"\n  quiet = \"500ms\"\n  delay_min = \"2s\"\n  delay_max = \"8s\"\n  progress_interval = \"0s\"\n  termination_log = \"/tmp/t\"\n}\n")

	tests := []struct {
		name string
		args []string
		want *Config
	}{
		{
			name: "flags alone, defaults",
			args: []string{"-upstream", "http://127.0.0.1:3000"},
			want: withDefaults(func(c *Config) {
				c.Source = "flags"
				c.Upstream.URL = mustURL(t, "http://127.0.0.1:3000")
			}),
		},
		{
			// The documented example must parse and must say exactly what Default says.
			name: "config.hcl example is the defaults",
			args: []string{"-config", "../config.hcl"},
			want: withDefaults(func(c *Config) {
				c.Source = "../config.hcl"
				c.Upstream.URL = mustURL(t, "http://127.0.0.1:3000")
			}),
		},
		{
			name: "full file",
			args: []string{"-config", fullPath},
			want: withDefaults(wantFull),
		},
		{
			name: "flags override the file",
			args: []string{
				"-config", fullPath,
				"-listen", "127.0.0.1:9000, 127.0.0.1:9001", "-listen", ":9002",
				"-upstream", "https://app.internal:8443",
				"-admin", "127.0.0.1:19901",
				"-drain-delay", "0s", "-readiness-fail-delay", "0s", "-grace", "45s",
				"-access-log", "off", "-log-format", "text", "-log-level", "warn",
				"-check",
			},
			want: withDefaults(func(c *Config) {
				wantFull(c)
				c.CheckOnly = true
				c.Listeners = []Listener{{Address: "127.0.0.1:9000"}, {Address: "127.0.0.1:9001"}, {Address: ":9002"}}
				c.Upstream.URL = mustURL(t, "https://app.internal:8443")
				c.Admin.Address = "127.0.0.1:19901"
				c.Drain.Delay = 0
				c.Drain.ReadinessFailDelay = 0
				c.Drain.Grace = 45 * time.Second
				c.Log.Level, c.Log.Format, c.Log.AccessLog = "warn", "text", "off"
			}),
		},
		{
			name: "drain.delay = auto and its bounds",
			args: []string{"-config", autoPath},
			want: withDefaults(func(c *Config) {
				c.Source = autoPath
				c.Upstream.URL = mustURL(t, "http://app:3000")
				c.Drain.DelayAuto, c.Drain.Quiet, c.Drain.DelayMin, c.Drain.DelayMax = true, 500*time.Millisecond, 2*time.Second, 8*time.Second
				c.Drain.ProgressInterval, c.Drain.TerminationLog = 0, "/tmp/t"
			}),
		},
		{
			name: "-drain-delay auto",
			args: []string{"-upstream", "http://127.0.0.1:3000", "-drain-delay", "auto"},
			want: withDefaults(func(c *Config) {
				c.Source = "flags"
				c.Upstream.URL = mustURL(t, "http://127.0.0.1:3000")
				c.Drain.DelayAuto = true
			}),
		},
		{
			name: "file sets some, the rest stay default",
			args: []string{"-config", partialPath, "-admin", "off"},
			want: withDefaults(func(c *Config) {
				c.Source = partialPath
				c.Upstream.URL = mustURL(t, "http://app:3000")
				c.Drain.Grace = 10 * time.Second
				c.Admin.Address = ""
			}),
		},
		{
			name: "args after -- are the command and override the file's",
			args: []string{"-config", fullPath, "--", "./other", "-flag", "--", "x"},
			want: withDefaults(func(c *Config) {
				wantFull(c)
				c.Upstream.Command = []string{"./other", "-flag", "--", "x"}
			}),
		},
		{
			name: "-- with nothing after keeps the file's command",
			args: []string{"-config", fullPath, "--"},
			want: withDefaults(wantFull),
		},
		{
			name: "-version loads and checks nothing",
			args: []string{"-version", "-config", "/does/not/exist.hcl"},
			want: withDefaults(func(c *Config) { c.Source = "flags"; c.ShowVersion = true }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			got, err := Parse(tt.args, &out)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.args, got, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("Parse wrote %q to out; only -h should write", out.String())
			}
		})
	}
}

func TestDefaultHasNoUpstream(t *testing.T) {
	if d := Default(); d.Upstream.URL != nil || len(d.Listeners) != 1 || d.Listeners[0].Address != "127.0.0.1:8080" {
		t.Errorf("Default() = %+v", d)
	}
	// Each call is independent: changing one must not change the next.
	Default().Listeners[0].Address = "changed"
	if got := Default().Listeners[0].Address; got != "127.0.0.1:8080" {
		t.Errorf("Default shares state between calls: %q", got)
	}
}

func TestFileErrors(t *testing.T) {
	// Each case lists substrings the error must contain: the position ("config.hcl:L:C")
	// and what is allowed instead.
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "unknown attribute",
			src:  "upstream {\n  url = \"http://a:1\"\n}\ndrain {\n  grase = \"5s\"\n}\n",
			want: []string{"config.hcl:5:3: drain.grase: unknown setting; did you mean grace; drain takes delay, delay_max, delay_min, flush_timeout, grace, handshake_wait, idle_close, progress_interval, quiet, readiness_fail_delay, termination_log"},
		},
		{
			name: "readiness_fail_delay longer than delay",
			src:  "upstream {\n  url = \"http://a:1\"\n}\ndrain {\n  delay = \"2s\"\n  readiness_fail_delay = \"3s\"\n}\n",
			want: []string{"config.hcl:6:26: drain.readiness_fail_delay: 3s is longer than drain.delay (2s)", "make it at most 2s"},
		},
		{
			name: "attribute in the wrong block",
			src:  "upstream {\n  url = \"http://a:1\"\n  grace = \"5s\"\n}\n",
			want: []string{"config.hcl:3:3: upstream.grace: unknown setting; did you mean drain { grace = ... }", "upstream takes command, dial_timeout"},
		},
		{
			name: "attribute at top level",
			src:  "grace = \"5s\"\nupstream {\n  url = \"http://a:1\"\n}\n",
			want: []string{"config.hcl:1:1: grace: settings go inside a block; did you mean drain { grace = ... }", "the blocks are admin, app, drain, health_check, limits, listener, log, proxy, runtime, server, upstream"},
		},
		{
			name: "unknown block",
			src:  "upstream {\n  url = \"http://a:1\"\n}\n\nservers {\n}\n",
			want: []string{"config.hcl:5:1: servers: unknown block; did you mean server { ... }; the blocks are admin, app, drain, health_check, limits, listener, log, proxy, runtime, server, upstream"},
		},
		{
			name: "unknown server engine",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nserver {\n  engine = \"nginx\"\n}\n",
			want: []string{"config.hcl:5:12: server.engine: ", "h1serve", "net/http"},
		},
		{
			name: "nested block",
			src:  "upstream {\n  url = \"http://a:1\"\n  tls {\n  }\n}\n",
			want: []string{"config.hcl:3:3: upstream.tls: blocks cannot be nested; upstream takes"},
		},
		{
			name: "block label",
			src:  "upstream \"app\" {\n  url = \"http://a:1\"\n}\n",
			want: []string{"config.hcl:1:10: upstream: the block takes no label; write upstream { ... }"},
		},
		{
			name: "duplicate block",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nupstream {\n  url = \"http://b:1\"\n}\n",
			want: []string{"config.hcl:4:1: upstream: duplicate block; only one is allowed and the first is on line 1; merge them"},
		},
		{
			// The example from the brief, to the column.
			name: "bad duration",
			src:  "upstream {\n  url = \"http://a:1\"\n}\n\n\ndrain {\n  grace = \"5 seconds\"\n}\n",
			want: []string{`config.hcl:7:11: drain.grace: "5 seconds" is not a duration; write e.g. "30s" or "500ms"`},
		},
		{
			name: "negative duration",
			src:  "upstream {\n  url = \"http://a:1\"\n  dial_timeout = \"-1s\"\n}\n",
			want: []string{`config.hcl:3:18: upstream.dial_timeout: "-1s" is negative; write 0 or a positive duration`},
		},
		{
			name: "bad url",
			src:  "upstream {\n  url = \"http://[::1\"\n}\n",
			want: []string{`config.hcl:2:9: upstream.url: "http://[::1" is not a URL; write e.g. "http://127.0.0.1:3000"`, `"unix:///run/app.sock"`},
		},
		{
			name: "unsupported scheme",
			src:  "upstream {\n  url = \"ftp://a:1\"\n}\n",
			want: []string{`config.hcl:2:9: upstream.url: "ftp://a:1" has scheme "ftp"; the scheme must be one of "http", "https", "unix"`},
		},
		{
			name: "url without scheme",
			src:  "upstream {\n  url = \"localhost:3000\"\n}\n",
			want: []string{`config.hcl:2:9: upstream.url: "localhost:3000" has no scheme; write "http://localhost:3000"`},
		},
		{
			name: "unix url without a path",
			src:  "upstream {\n  url = \"unix://run/app.sock\"\n}\n",
			want: []string{`config.hcl:2:9: upstream.url: "unix://run/app.sock" does not name a socket path`, `"unix:///run/app.sock"`},
		},
		{
			name: "bad enum",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nlog {\n  level = \"verbose\"\n}\n",
			want: []string{`config.hcl:5:11: log.level: "verbose" is not allowed; write one of "trace", "debug", "info", "warn", "error"`},
		},
		{
			name: "bad cidr, pointing at the element",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nproxy {\n  trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n}\n",
			want: []string{`config.hcl:5:36: proxy.trusted_proxies: "10.0.0.0/33" is not a CIDR prefix (prefix length out of range); write e.g. "10.0.0.0/8"`},
		},
		{
			name: "cidr with host bits",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nproxy {\n  trusted_proxies = [\"10.1.2.3/8\"]\n}\n",
			want: []string{`config.hcl:5:22: proxy.trusted_proxies: "10.1.2.3/8" has bits set after the first 8; write "10.0.0.0/8"`},
		},
		{
			name: "not an address",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nproxy {\n  trusted_proxies = [\"gateway\"]\n}\n",
			want: []string{`config.hcl:5:22: proxy.trusted_proxies: "gateway" is not an IP address or CIDR prefix`},
		},
		{
			name: "int too small",
			src:  "upstream {\n  url = \"http://a:1\"\n  idle_conns = 0\n}\nlimits {\n  max_connections = -1\n}\n",
			want: []string{
				"config.hcl:3:16: upstream.idle_conns: 0 is too small; write 1 or more",
				"config.hcl:6:21: limits.max_connections: -1 is too small; write 0 or more",
			},
		},
		{
			name: "response head cap too small",
			src:  "upstream {\n  url = \"http://a:1\"\n  max_response_header_bytes = 100\n}\n",
			want: []string{"config.hcl:3:31: upstream.max_response_header_bytes: 100 is too small; write 1024 or more"},
		},
		{
			name: "wrong type",
			src:  "upstream {\n  url = \"http://a:1\"\n  idle_conns = \"many\"\n}\n",
			want: []string{"config.hcl:3:17: upstream.idle_conns: Unsuitable value type: a number is required"},
		},
		{
			name: "bad listener and admin address",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nlistener {\n  address = \"8080\"\n}\nadmin {\n  address = \"localhost:http\"\n}\n",
			want: []string{
				`config.hcl:5:13: listener.address: "8080" is not host:port; write e.g. ":8080"`,
				`config.hcl:8:13: admin.address: "localhost:http" has port "http"; the port must be a number from 0 to 65535, or "off" to disable`,
			},
		},
		{
			name: "duplicate listener",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nlistener {\n  address = \":80\"\n}\nlistener {\n  address = \":80\"\n}\n",
			want: []string{`config.hcl:8:13: listener.address: ":80" is already a listener above`},
		},
		{
			name: "listener without address",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nlistener {\n}\n",
			want: []string{`config.hcl:4:10: Missing required argument: The argument "address" is required`},
		},
		{
			name: "syntax error",
			src:  "upstream {\n  url = \n}\n",
			want: []string{"config.hcl:2:9: Invalid expression"},
		},
		{
			name: "variables are not allowed",
			src:  "upstream {\n  url = var.url\n}\n",
			want: []string{"config.hcl:2:9: upstream.url: Variables not allowed"},
		},
		{
			name: "missing upstream",
			src:  "drain {\n  grace = \"5s\"\n}\n",
			want: []string{"no upstream: give -upstream URL, DRAINPROXY_UPSTREAM_URL in the environment, or upstream { url = ... } in the config file"},
		},
		{
			name: "empty command program",
			src:  "upstream {\n  url = \"http://a:1\"\n  command = [\"\", \"x\"]\n}\n",
			want: []string{`config.hcl:3:13: upstream.command: has an empty program name`},
		},
		{
			name: "bad health check",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nhealth_check {\n  path = \"healthz\"\n  interval = \"0s\"\n  healthy_threshold = 0\n}\n",
			want: []string{
				`config.hcl:5:10: health_check.path: "healthz" does not start with /; write e.g. "/healthz"`,
				`config.hcl:6:14: health_check.interval: "0s" is zero; write a positive duration`,
				`config.hcl:7:23: health_check.healthy_threshold: 0 is too small; write 1 or more`,
			},
		},
		{
			name: "grpc health check with a path, service without grpc",
			src:  "upstream {\n  url = \"h2c://a:1\"\n}\nhealth_check {\n  grpc = true\n  path = \"/healthz\"\n}\n",
			want: []string{`config.hcl:6:10: health_check.path: is for HTTP checks; with grpc = true`},
		},
		{
			name: "service without grpc",
			src:  "upstream {\n  url = \"h2c://a:1\"\n}\nhealth_check {\n  service = \"echo\"\n}\n",
			want: []string{`config.hcl:5:13: health_check.service: names the service of a gRPC health check; add grpc = true`},
		},
		{
			name: "h2c on a TLS listener",
			src:  "listener {\n  address = \":443\"\n  h2c = true\n  tls {\n    cert_file = \"a\"\n    key_file = \"b\"\n  }\n}\nupstream {\n  url = \"h2c://a:1\"\n}\n",
			want: []string{`config.hcl:3:9: listener.h2c: is for a plain-HTTP listener`},
		},
		{
			name: "bad app settings",
			src:  "upstream {\n  url = \"http://a:1\"\n}\napp {\n  stop_signal = \"SIGSTOP\"\n  restart = \"sometimes\"\n  max_restarts = 0\n  forward_signals = [\"SIGUSR2\", \"SIGTERM\"]\n  stop_timeout = \"0s\"\n}\n",
			want: []string{
				`config.hcl:5:17: app.stop_signal: "SIGSTOP" is not allowed; write one of "SIGTERM", "SIGINT", "SIGQUIT"`,
				`config.hcl:6:13: app.restart: "sometimes" is not allowed; write one of "never", "on-failure", "always"`,
				`config.hcl:7:18: app.max_restarts: 0 is too small; write 1 or more`,
				`config.hcl:8:33: app.forward_signals: "SIGTERM" is not allowed; write one of "SIGUSR1", "SIGUSR2"`,
				`config.hcl:9:18: app.stop_timeout: "0s" is zero; write a positive duration`,
			},
		},
		{
			name: "admin token with a space",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  token = \"two words\"\n}\n",
			want: []string{`config.hcl:5:11: admin.token: contains a space`},
		},
		{
			name: "admin token and token file",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  token = \"abc\"\n  token_file = \"/etc/hostname\"\n}\n",
			want: []string{`config.hcl:6:16: admin.token_file: is set as well as token; keep one of them`},
		},
		{
			name: "admin allowed host with a port",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  allowed_hosts = [\"ok.example\", \"admin.example:9901\"]\n}\n",
			want: []string{`config.hcl:5:34: admin.allowed_hosts: "admin.example:9901" is not a host name or IP address; write it as a client puts it in Host, without scheme or port`},
		},
		{
			name: "admin token file missing",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  token_file = \"/does/not/exist\"\n}\n",
			want: []string{`config.hcl:5:16: admin.token_file: cannot read the token: open /does/not/exist: no such file or directory`},
		},
		{
			name: "admin on a listener",
			src:  "upstream {\n  url = \"http://a:1\"\n}\nlistener {\n  address = \"127.0.0.1:9901\"\n}\n",
			want: []string{`admin address "127.0.0.1:9901" is also a listener address`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.src)
			cfg, err := Parse([]string{"-config", path}, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", tt.src, cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with its error")
			}
		})
	}
}

// Every problem in a file is reported at once, one line each, in file order.
func TestFileErrorsAllReported(t *testing.T) {
	src := "upstream {\n  url = \"ftp://a\"\n}\ndrain {\n  grace = \"x\"\n  delay = \"-1s\"\n}\n"
	_, err := Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	wantPrefixes := []string{"config.hcl:2:9: upstream.url", "config.hcl:5:11: drain.grace", "config.hcl:6:11: drain.delay"}
	if len(lines) != len(wantPrefixes) {
		t.Fatalf("want %d lines, got:\n%v", len(wantPrefixes), err)
	}
	for i, p := range wantPrefixes {
		if !strings.Contains(lines[i], p) {
			t.Errorf("line %d = %q, want it to contain %q", i, lines[i], p)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no upstream", []string{"-listen", ":8080"}, []string{"no upstream: give -upstream URL, DRAINPROXY_UPSTREAM_URL in the environment, or upstream { url = ... } in the config file"}},
		{"command without upstream", []string{"--", "./app"}, []string{"no upstream:"}},
		{"bad duration", []string{"-upstream", "http://a:1", "-grace", "5 seconds"}, []string{`-grace: "5 seconds" is not a duration; write e.g. "30s"`}},
		{"negative duration", []string{"-upstream", "http://a:1", "-drain-delay", "-5s"}, []string{`-drain-delay: "-5s" is negative`}},
		{"bad scheme", []string{"-upstream", "ws://a:1"}, []string{`-upstream: "ws://a:1" has scheme "ws"; the scheme must be one of "http", "https", "unix"`}},
		{"bad enum", []string{"-upstream", "http://a:1", "-log-format", "xml"}, []string{`-log-format: "xml" is not allowed; write one of "auto", "text", "json"`}},
		{"bad level", []string{"-upstream", "http://a:1", "-log-level", "INFO"}, []string{`-log-level: "INFO" is not allowed; write one of "trace"`}},
		{"bad listen", []string{"-upstream", "http://a:1", "-listen", ":80,nope"}, []string{`-listen: "nope" is not host:port`}},
		{"duplicate listen", []string{"-upstream", "http://a:1", "-listen", ":80", "-listen", ":80"}, []string{`-listen: ":80" is given twice`}},
		{"bad admin", []string{"-upstream", "http://a:1", "-admin", "none"}, []string{`-admin: "none" is not host:port`, `or "off" to disable`}},
		{"empty access log", []string{"-upstream", "http://a:1", "-access-log", ""}, []string{`-access-log: is empty; write "stdout", "stderr", "off" or a file path`}},
		{"unknown flag", []string{"-upstrem", "http://a:1"}, []string{"flag provided but not defined: -upstrem", "drainproxy -h"}},
		{"missing value", []string{"-upstream"}, []string{"flag needs an argument: -upstream"}},
		{"command without --", []string{"-upstream", "http://a:1", "./app", "-x"}, []string{`unexpected argument "./app"`, "-- ./app -x"}},
		{"missing file", []string{"-config", "/does/not/exist.hcl"}, []string{"read config file: open /does/not/exist.hcl"}},
		{"readiness fail delay without a delay", []string{"-upstream", "http://a:1", "-readiness-fail-delay", "1s"}, []string{"drain.readiness_fail_delay (-readiness-fail-delay) 1s is longer than drain.delay (0s)"}},
		{"empty command after --", []string{"-upstream", "http://a:1", "--", ""}, []string{"has an empty program name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg, err := Parse(tt.args, &out)
			if err == nil {
				t.Fatalf("Parse(%q) accepted: %+v", tt.args, cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("a flag error should be one line: %q", err)
			}
			if out.Len() != 0 {
				t.Errorf("errors are returned, not written: out = %q", out.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var out bytes.Buffer
		cfg, err := Parse([]string{"-upstream", "http://a:1", arg}, &out)
		if !errors.Is(err, flag.ErrHelp) || cfg != nil {
			t.Errorf("Parse(%s) = %v, %v; want nil, flag.ErrHelp", arg, cfg, err)
		}
		for _, w := range []string{"Usage: drainproxy", "-config FILE", "-upstream URL", "-grace DUR", "-- COMMAND"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("usage lacks %q:\n%s", w, out.String())
			}
		}
	}
}

func TestTrustedProxyAddresses(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means an error
	}{
		{"127.0.0.1", "127.0.0.1/32"},
		{"::1", "::1/128"},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"fe80::1%eth0", ""},
		{"10.0.0.0/", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := parseTrustedProxy(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("parseTrustedProxy(%q) = %v, want an error", tt.in, got)
		case tt.want != "" && (err != nil || got.String() != tt.want):
			t.Errorf("parseTrustedProxy(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestUpstreamURLs(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // "" means accepted
	}{
		{"http://127.0.0.1:3000", ""},
		{"https://app.internal", ""},
		{"http://app:3000/prefix", ""},
		{"unix:///run/app.sock", ""},
		{"", "is empty"},
		{"http://", "has no host"},
		{"http://a:99999", "the port must be a number"},
		{"/run/app.sock", `write "unix:///run/app.sock"`},
		{"http://a:1/#x", "fragment"},
		{"unix:app.sock", "does not name a socket path"},
		{"h2c://127.0.0.1:50051", ""},
		{"unix+h2c:///run/grpc.sock", ""},
		{"h2c://", "has no host"},
		{"unix+h2c://run/grpc.sock", `"unix+h2c:///run/app.sock"`},
		{"grpc://127.0.0.1:50051", `"h2c", "unix+h2c"`},
	}
	for _, tt := range tests {
		u, err := parseUpstreamURL(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("parseUpstreamURL(%q): %v", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parseUpstreamURL(%q) = %v, %v; want an error containing %q", tt.in, u, err, tt.wantErr)
		}
	}
	if u, _ := parseUpstreamURL("unix:///run/app.sock"); u == nil || u.Path != "/run/app.sock" {
		t.Errorf("unix URL path = %v, want /run/app.sock", u)
	}
}

// Port 0 means "any free port": an admin and a listener both on port 0 never collide.
func TestPortZeroNeverCollides(t *testing.T) {
	cfg, err := Parse([]string{"-upstream", "http://127.0.0.1:3000", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Admin.Address != "127.0.0.1:0" || cfg.Listeners[0].Address != "127.0.0.1:0" {
		t.Fatalf("got admin %q listeners %v", cfg.Admin.Address, cfg.Listeners)
	}
}

func TestAdminAllowedHosts(t *testing.T) {
	src := "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  allowed_hosts = [\"Admin.Example.\", \"[fd00::1]\", \"10.0.0.5\"]\n}\n"
	cfg, err := Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"admin.example", "fd00::1", "10.0.0.5"}
	if !slices.Equal(cfg.Admin.AllowedHosts, want) {
		t.Errorf("AllowedHosts = %q; want %q (lower case, no trailing dot, IPs without brackets)", cfg.Admin.AllowedHosts, want)
	}
}

func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenPath, []byte("  abc123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyPath := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyPath, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  token_file = \"" + tokenPath + "\"\n}\n"
	cfg, err := Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Token != "abc123" || cfg.Admin.TokenFile != tokenPath {
		t.Errorf("Admin = %+v; want the file's token without whitespace", cfg.Admin)
	}

	src = "upstream {\n  url = \"http://a:1\"\n}\nadmin {\n  token_file = \"" + emptyPath + "\"\n}\n"
	_, err = Parse([]string{"-config", writeConfig(t, src)}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "config.hcl:5:16: admin.token_file: \""+emptyPath+"\" is empty; write the token into it") {
		t.Errorf("empty token file: error %v", err)
	}
}

// h2c = false on a plain listener, and a gRPC health check with a service.
func TestParseGRPCSettings(t *testing.T) {
	path := writeConfig(t, `
listener {
  address = "127.0.0.1:8080"
  h2c = false
}
listener {
  address = "127.0.0.1:8081"
}
upstream { url = "unix+h2c:///run/grpc.sock" }
health_check {
  grpc    = true
  service = "echo"
}
`)
	cfg, err := Parse([]string{"-config", path}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Listeners[0].DisableH2C || cfg.Listeners[1].DisableH2C {
		t.Errorf("DisableH2C = %v, %v; want true, false", cfg.Listeners[0].DisableH2C, cfg.Listeners[1].DisableH2C)
	}
	if h := cfg.HealthCheck; !h.GRPC || h.GRPCService != "echo" || h.Path != "" {
		t.Errorf("health check %+v; want grpc, service echo, no path", h)
	}
	if u := cfg.Upstream.URL; u.Scheme != "unix+h2c" || u.Path != "/run/grpc.sock" {
		t.Errorf("upstream %v", u)
	}
}

// TestFileErrorsAllAtOnce: every mistake of a file in one run, in file order, each with
// its position, and the name meant for a misspelled setting or block.
func TestFileErrorsAllAtOnce(t *testing.T) {
	src := `upstream {
  url = "http://a:1"
}
drain {
  grase = "5s"
  delay = "5 parsecs"
}
helth_check {
  path = "/"
}
limits {
  max_connections = "many"
  idle_timeot = "1s"
}
listener {
  tls {
    acme {
      domain = ["example.com"]
    }
  }
}
`
	path := writeConfig(t, src)
	_, err := Parse([]string{"-config", path}, io.Discard)
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		"config.hcl:5:3: drain.grase: unknown setting; did you mean grace;",
		"config.hcl:6:11: drain.delay: ",
		"config.hcl:8:1: helth_check: unknown block; did you mean health_check { ... };",
		"config.hcl:12:22: limits.max_connections: ",
		"config.hcl:13:3: limits.idle_timeot: unknown setting; did you mean idle_timeout;",
		"config.hcl:15:10: Missing required argument",
		"config.hcl:18:7: listener.tls.acme.domain: unknown setting; did you mean domains;",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("got %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if i >= len(lines) || !strings.Contains(lines[i], w) {
			t.Errorf("line %d does not contain %q:\n%v", i+1, w, err)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	names := []string{"delay", "grace", "idle_close", "handshake_wait", "flush_timeout"}
	for in, want := range map[string]string{
		"grase": "grace", "gracee": "grace", "idle_clsoe": "idle_close", "flushtimeout": "flush_timeout",
		"dealy": "delay", "xyz": "", "timeout": "", "g": "",
	} {
		got := didYouMean(in, names, "")
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("didYouMean(%q) = %q, want %q", in, got, want)
		}
	}
}
