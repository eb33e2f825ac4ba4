package main

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/config"
)

// What a reload applies in place and what it names as needing an upgrade.
func TestReloadChanges(t *testing.T) {
	base := func() *config.Config {
		c := config.Default()
		c.Upstream.URL, _ = url.Parse("http://127.0.0.1:3000")
		return c
	}
	cases := []struct {
		name        string
		supervised  bool
		edit        func(*config.Config)
		inPlace     []string
		needUpgrade []string
	}{
		{"nothing", false, func(*config.Config) {}, nil, nil},
		{"upstream url", false, func(c *config.Config) { c.Upstream.URL, _ = url.Parse("http://127.0.0.1:4000") },
			[]string{"upstream.url"}, nil},
		{"upstream url, supervised", true, func(c *config.Config) { c.Upstream.URL, _ = url.Parse("http://127.0.0.1:4000") },
			nil, []string{"upstream.url"}},
		{"body limit and a server timeout", false, func(c *config.Config) {
			c.Limits.MaxRequestBodyBytes = 1 << 20
			c.Limits.IdleTimeout = time.Minute
		}, []string{"limits.max_request_body_bytes"}, []string{"limits"}},
		{"listeners and log format", false, func(c *config.Config) {
			c.Listeners = append(c.Listeners, config.Listener{Address: "127.0.0.1:8081"})
			c.Log.Format = "json"
		}, nil, []string{"listener", "log.format"}},
		{"access log, token, level, check", false, func(c *config.Config) {
			c.Log.AccessLog = "/tmp/access.log"
			c.Admin.Token = "0123456789abcdef"
			c.Log.Level = "debug"
			c.HealthCheck.Path = "/healthz"
		}, []string{"log.level", "log.access_log", "admin.token", "health_check"}, nil},
		{"drain timing", false, func(c *config.Config) { c.Drain.Grace = time.Minute }, nil, []string{"drain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := base()
			tc.edit(next)
			inPlace, needUpgrade := changes(tc.supervised, base(), base(), next)
			if !slices.Equal(inPlace, tc.inPlace) || !slices.Equal(needUpgrade, tc.needUpgrade) {
				t.Fatalf("changes = %q, %q; want %q, %q", inPlace, needUpgrade, tc.inPlace, tc.needUpgrade)
			}
		})
	}
}
