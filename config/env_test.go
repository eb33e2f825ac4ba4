package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestEnvPrecedence: defaults < file < environment < flags, for a setting of each kind.
func TestEnvPrecedence(t *testing.T) {
	path := writeConfig(t, `
upstream { url = "http://file:1" }
drain {
  grace = "11s"
  delay = "1s"
}
listener { address = "127.0.0.1:7001" }
`)
	env := envOf(map[string]string{
		"DRAINPROXY_CONFIG":                 path,
		"DRAINPROXY_UPSTREAM_URL":           "http://env:2",
		"DRAINPROXY_DRAIN_GRACE":            "22s",
		"DRAINPROXY_LIMITS_MAX_CONNECTIONS": "7",
		"DRAINPROXY_HEALTH_CHECK_GRPC":      "true",
		"DRAINPROXY_APP_FORWARD_SIGNALS":    "SIGUSR1, SIGWINCH",
		"DRAINPROXY_UPSTREAM_COMMAND":       `["./app", "--port", "3000"]`,
		"DRAINPROXY_LISTENER_ADDRESS":       "0.0.0.0:8080, [::]:8081",
		"DRAINPROXY_APP_OUTPUT_PREFIX":      "${not a template} ",
		"DRAINPROXY_ADMIN_ADDRESS":          "", // empty is unset
	})
	cfg, err := ParseEnv([]string{"-grace", "33s"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != path {
		t.Errorf("Source = %q, want the file from DRAINPROXY_CONFIG", cfg.Source)
	}
	if got := cfg.Upstream.URL.String(); got != "http://env:2" {
		t.Errorf("upstream = %s, want the environment's over the file's", got)
	}
	if cfg.Drain.Grace != 33*time.Second {
		t.Errorf("grace = %v, want the flag's over the environment's", cfg.Drain.Grace)
	}
	if cfg.Drain.Delay != time.Second {
		t.Errorf("delay = %v, want the file's", cfg.Drain.Delay)
	}
	if cfg.Limits.MaxConnections != 7 || !cfg.HealthCheck.GRPC {
		t.Errorf("numbers and bools from the environment: %d %v", cfg.Limits.MaxConnections, cfg.HealthCheck.GRPC)
	}
	if len(cfg.App.ForwardSignals) != 2 || strings.Join(cfg.Upstream.Command, " ") != "./app --port 3000" {
		t.Errorf("lists from the environment: %v %q", cfg.App.ForwardSignals, cfg.Upstream.Command)
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[0].Address != "0.0.0.0:8080" || cfg.Listeners[1].Address != "[::]:8081" {
		t.Errorf("listeners = %+v, want the environment's in place of the file's", cfg.Listeners)
	}
	if cfg.App.OutputPrefix != "${not a template} " {
		t.Errorf("output prefix = %q, want it as written", cfg.App.OutputPrefix)
	}
	if cfg.Admin.Address != Default().Admin.Address {
		t.Errorf("an empty variable changed admin.address to %q", cfg.Admin.Address)
	}
	// -config wins over DRAINPROXY_CONFIG.
	other := writeConfig(t, `upstream { url = "http://other:3" }`)
	cfg, err = ParseEnv([]string{"-config", other}, envOf(map[string]string{"DRAINPROXY_CONFIG": path}), io.Discard)
	if err != nil || cfg.Source != other {
		t.Errorf("-config with DRAINPROXY_CONFIG set: %v %v", cfg, err)
	}
}

// TestEnvErrors: every bad variable at once, each named, none with a position.
func TestEnvErrors(t *testing.T) {
	_, err := ParseEnv(nil, envOf(map[string]string{
		"DRAINPROXY_UPSTREAM_URL":           "ftp://x",
		"DRAINPROXY_DRAIN_GRACE":            "5 parsecs",
		"DRAINPROXY_LIMITS_MAX_CONNECTIONS": "many",
	}), io.Discard)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"$DRAINPROXY_UPSTREAM_URL: upstream.url:", "$DRAINPROXY_DRAIN_GRACE: drain.grace:", "$DRAINPROXY_LIMITS_MAX_CONNECTIONS: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	_, err = ParseEnv(nil, envOf(map[string]string{"DRAINPROXY_UPSTREAM": "http://a:1"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "DRAINPROXY_UPSTREAM_URL") {
		t.Errorf("DRAINPROXY_UPSTREAM alone: %v, want a pointer to DRAINPROXY_UPSTREAM_URL", err)
	}
}

// TestEnvSettingsCoverFile: every attribute of every single block has a variable.
func TestEnvSettingsCoverFile(t *testing.T) {
	vars := map[string]bool{}
	for _, s := range EnvSettings() {
		vars[s.Var] = true
	}
	for block, schema := range blockSchemas() {
		if schema.repeatable {
			continue
		}
		for _, attr := range schema.attrs {
			if v := EnvVarName(block + "." + attr); !vars[v] {
				t.Errorf("%s.%s has no environment variable %s", block, attr, v)
			}
		}
	}
	if !vars["DRAINPROXY_UPSTREAM_URL"] || !vars["DRAINPROXY_LISTENER_ADDRESS"] {
		t.Errorf("missing the basic variables: %v", vars)
	}
}
