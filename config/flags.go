package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

const usageHeader = `Usage: drainproxy [flags] [-- COMMAND [ARGS...]]
       drainproxy probe [-timeout 2s] URL   (exit 0 if URL answers 2xx: a health check)
       drainproxy install DEST              (copy this binary, e.g. into a shared volume)

drainproxy proxies HTTP to an upstream app and, on SIGTERM or SIGINT, drains it without
failing a request it has accepted. Settings come from defaults, then the -config file
(or $DRAINPROXY_CONFIG), then the environment (DRAINPROXY_ and the setting's name in the
file: DRAINPROXY_UPSTREAM_URL, DRAINPROXY_DRAIN_GRACE, ...), then these flags. Without a
file, -upstream is enough to run. A COMMAND after -- is the app to start and supervise.

Flags:
`

// errNoUpstream is the message for a config with nowhere to send requests.
const errNoUpstream = "no upstream: give -upstream URL, DRAINPROXY_UPSTREAM_URL in the environment, or upstream { url = ... } in the config file"

// Parse is ParseEnv without an environment: defaults, the file, the flags.
func Parse(args []string, out io.Writer) (*Config, error) {
	return ParseEnv(args, nil, out)
}

// ParseEnv parses the command line (args without the program name). If -config FILE (or
// $DRAINPROXY_CONFIG) is given it loads that file over the defaults; then the settings
// getenv has (env.go; nil reads none), then the flags; then it validates.
// Errors are ready to print as they are: file problems one per line as
// "FILE:LINE:COL: block.setting: what is wrong; what to write instead", flag problems
// naming the flag. For -h or -help it writes the usage to out and returns flag.ErrHelp.
// Args after "--" become Upstream.Command. With -version nothing is loaded or validated.
func ParseEnv(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	fs := flag.NewFlagSet("drainproxy", flag.ContinueOnError)
	// The flag package would print errors and the usage itself; the caller prints the
	// returned error instead, so that it appears exactly once.
	fs.SetOutput(io.Discard)

	var (
		configPath  string
		showVersion bool
		checkOnly   bool
		listeners   []Listener      // nil unless -listen was given
		overrides   []func(*Config) // in command-line order, applied after the file
	)
	override := func(set func(*Config)) { overrides = append(overrides, set) }

	fs.StringVar(&configPath, "config", "", "load settings from the HCL `FILE` (see config.hcl); flags override it")
	fs.Func("listen", "accept clients on `ADDR` (host:port); comma-separated or repeated for several; replaces the file's listeners (default 127.0.0.1:8080)",
		func(s string) error {
			for _, a := range strings.Split(s, ",") {
				addr, err := parseListenAddress(strings.TrimSpace(a))
				if err != nil {
					return err
				}
				if slices.Contains(listeners, Listener{Address: addr}) {
					return fmt.Errorf("%q is given twice; each listener needs its own address", addr)
				}
				listeners = append(listeners, Listener{Address: addr})
			}
			return nil
		})
	fs.Func("upstream", "send requests to `URL`: http://host:port, https://host, unix:///path/to.sock, or h2c://host:port and unix+h2c:///path/to.sock for HTTP/2 in clear text (gRPC)",
		func(s string) error {
			u, err := parseUpstreamURL(s)
			if err != nil {
				return err
			}
			override(func(c *Config) { c.Upstream.URL = u })
			return nil
		})
	fs.Func("admin", "serve the admin endpoints on `ADDR`, or \"off\" (default 127.0.0.1:9901): probes GET /healthz, GET /readyz, GET /drained; for operators GET /metrics, GET /status, POST /drain, POST /restart",
		stringFlag(parseAdminAddress, override, func(c *Config, v string) { c.Admin.Address = v }))
	fs.Func("drain-delay", "keep serving for `DUR` after the signal so load balancers deregister us, e.g. 5s, or \"auto\": until new connections stop (default 0s)",
		stringFlag(parseDelay, override, func(c *Config, d delaySetting) { c.Drain.Delay, c.Drain.DelayAuto = d.fixed, d.auto }))
	fs.Func("readiness-fail-delay", "keep /readyz at 200 for `DUR` after the signal, at most the drain delay, e.g. for externalTrafficPolicy: Local (default 0s)",
		stringFlag(parseDuration, override, func(c *Config, d time.Duration) { c.Drain.ReadinessFailDelay = d }))
	fs.Func("grace", "let in-flight requests finish for up to `DUR` after the listeners close (default 30s)",
		stringFlag(parseDuration, override, func(c *Config, d time.Duration) { c.Drain.Grace = d }))
	fs.Func("access-log", "write the access log to `PATH`, \"stdout\", \"stderr\" or \"off\" (default stdout)",
		stringFlag(parseAccessLog, override, func(c *Config, v string) { c.Log.AccessLog = v }))
	fs.Func("log-format", "log as `FORMAT`: "+strings.Join(logFormats(), "|")+" (default auto: text on a terminal, json otherwise)",
		stringFlag(oneOf(logFormats()), override, func(c *Config, v string) { c.Log.Format = v }))
	fs.Func("log-level", "log at `LEVEL`: "+strings.Join(logLevels(), "|")+" (default info)",
		stringFlag(oneOf(logLevels()), override, func(c *Config, v string) { c.Log.Level = v }))
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&checkOnly, "check", false, "validate the configuration and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usageHeader)
			fs.SetOutput(out)
			fs.PrintDefaults()
			return nil, flag.ErrHelp
		}
		return nil, fmt.Errorf("%w (drainproxy -h lists the flags)", err)
	}
	command, err := commandArgs(args, fs.Args())
	if err != nil {
		return nil, err
	}

	cfg := Default()
	cfg.Source = "flags"
	cfg.ShowVersion = showVersion
	cfg.CheckOnly = checkOnly
	if showVersion {
		return cfg, nil
	}
	if configPath == "" {
		configPath = getenv(EnvConfigFile)
	}
	if configPath != "" {
		cfg.Source = configPath
		src, err := os.ReadFile(configPath)
		if err != nil {
			return nil, fmt.Errorf("read config file: %w", err)
		}
		if err := loadFile(src, configPath, cfg); err != nil {
			return nil, err
		}
	}
	if err := loadEnv(getenv, cfg); err != nil {
		return nil, err
	}
	for _, set := range overrides {
		set(cfg)
	}
	if listeners != nil {
		cfg.Listeners = listeners
	}
	if command != nil {
		cfg.Upstream.Command = command
	}
	if err := checkWhole(cfg); err != nil {
		if cfg.Upstream.URL == nil && getenv(EnvPrefix+"UPSTREAM") != "" {
			err = fmt.Errorf("%w (the environment variable is %s, not %s)", err, EnvVarName("upstream.url"), EnvPrefix+"UPSTREAM")
		}
		return nil, err
	}
	return cfg, nil
}

// stringFlag makes a flag.Func handler that validates the value with parse at once (so
// the flag package names the flag in the error) and records set to run after the file.
func stringFlag[T any](parse func(string) (T, error), override func(func(*Config)), set func(*Config, T)) func(string) error {
	return func(s string) error {
		v, err := parse(s)
		if err != nil {
			return err
		}
		override(func(c *Config) { set(c, v) })
		return nil
	}
}

// commandArgs returns the arguments after "--" as the upstream command. Other
// non-flag arguments are refused: without "--" it is ambiguous whether they were meant
// as a command or are a mistyped flag.
func commandArgs(args, rest []string) ([]string, error) {
	if len(rest) == 0 {
		return nil, nil
	}
	if consumed := len(args) - len(rest); consumed == 0 || args[consumed-1] != "--" {
		return nil, fmt.Errorf("unexpected argument %q; to start an app, put its command after --, e.g. drainproxy -upstream http://127.0.0.1:3000 -- %s",
			rest[0], strings.Join(rest, " "))
	}
	return parseCommand(rest)
}

// readinessFailDelayError says why drain.readiness_fail_delay may not outlast drain.delay:
// once the delay is over the listeners refuse new connections, and a load balancer that
// still saw us ready would send them to a closed port.
func readinessFailDelayError(rfd, delay time.Duration) error {
	return fmt.Errorf("%s is longer than drain.delay (%s): readiness must fail before the listeners stop accepting, or a load balancer sends new connections to a closed port; make it at most %s, or raise drain.delay",
		rfd, delay, delay)
}

// checkWhole validates what only makes sense once the file and flags are merged.
func checkWhole(cfg *Config) error {
	if cfg.Upstream.URL == nil {
		return errors.New(errNoUpstream)
	}
	if d := cfg.Drain; d.ReadinessFailDelay > d.Delay && !d.DelayAuto { // auto: the delay starts its quiet count when readiness fails
		return fmt.Errorf("drain.readiness_fail_delay (-readiness-fail-delay) %v", readinessFailDelayError(d.ReadinessFailDelay, d.Delay))
	}
	// Port 0 asks the kernel for a free port, so it never collides.
	if a := cfg.Admin.Address; a != "" && !strings.HasSuffix(a, ":0") && slices.ContainsFunc(cfg.Listeners, func(l Listener) bool { return l.Address == a }) {
		return fmt.Errorf("admin address %q is also a listener address; the admin endpoints must not be on the public listener: give the admin another port, or \"off\"",
			cfg.Admin.Address)
	}
	return nil
}
