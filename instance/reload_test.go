package instance

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
		}, []string{"limits.max_request_body_bytes"}, []string{"limits.idle_timeout"}},
		{"listeners and log format", false, func(c *config.Config) {
			c.Listeners = append(c.Listeners, config.Listener{Address: "127.0.0.1:8081"})
			c.Log.Format = "json"
		}, nil, []string{"log.format"}}, // listeners: listenerChanges
		{"access log, token, level, check", false, func(c *config.Config) {
			c.Log.AccessLog = "/tmp/access.log"
			c.Admin.Token = "0123456789abcdef"
			c.Log.Level = "debug"
			c.HealthCheck.Path = "/healthz"
		}, []string{"admin.token", "health_check.path", "log.level", "log.access_log"}, nil},
		{"drain timing", false, func(c *config.Config) { c.Drain.Grace = time.Minute }, nil, []string{"drain.grace"}},
		{"certificate files", false, func(c *config.Config) {
			c.Listeners[0].TLS = &config.TLS{CertFile: "a.pem", KeyFile: "a.key"}
		}, []string{"listener.tls.cert_file", "listener.tls.key_file"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := base()
			tc.edit(next)
			settings, needUpgrade := changes(tc.supervised, base(), base(), next)
			var inPlace []string
			for _, s := range settings {
				inPlace = append(inPlace, s.Name)
			}
			if !slices.Equal(inPlace, tc.inPlace) || !slices.Equal(needUpgrade, tc.needUpgrade) {
				t.Fatalf("changes = %q, %q; want %q, %q", inPlace, needUpgrade, tc.inPlace, tc.needUpgrade)
			}
		})
	}
}

// Listeners are compared by address: added plain ones are opened, removed ones drained,
// and a changed one or a new HTTPS one needs an upgrade (and keeps serving as it was).
func TestReloadListenerChanges(t *testing.T) {
	tlsFiles := func(cert string) *config.TLS { return &config.TLS{CertFile: cert, KeyFile: cert + ".key"} }
	running := []config.Listener{
		{Address: "127.0.0.1:8080"},
		{Address: "127.0.0.1:8081"},
		{Address: "127.0.0.1:8443", TLS: tlsFiles("a.pem")},
		{Address: "127.0.0.1:8082"},
	}
	next := []config.Listener{
		{Address: "127.0.0.1:8080"},                         // unchanged
		{Address: "127.0.0.1:8443", TLS: tlsFiles("b.pem")}, // only its certificate files: in place
		{Address: "127.0.0.1:8082", DisableH2C: true},       // changed: needs an upgrade
		{Address: "127.0.0.1:9090"},                         // added
		{Address: "127.0.0.1:9443", TLS: tlsFiles("c.pem")}, // added, HTTPS: needs an upgrade
	}
	add, remove, needUpgrade, served := listenerChanges(running, next)
	addrs := func(ls []config.Listener) (out []string) {
		for _, l := range ls {
			out = append(out, l.Address)
		}
		return out
	}
	if got := addrs(add); !slices.Equal(got, []string{"127.0.0.1:9090"}) {
		t.Errorf("add = %q", got)
	}
	if !slices.Equal(remove, []string{"127.0.0.1:8081"}) {
		t.Errorf("remove = %q", remove)
	}
	if !slices.Equal(needUpgrade, []string{"listener 127.0.0.1:8082", "listener 127.0.0.1:9443 (a new HTTPS listener)"}) {
		t.Errorf("needUpgrade = %q", needUpgrade)
	}
	if got := addrs(served); !slices.Equal(got, []string{"127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.1:8082", "127.0.0.1:9090"}) {
		t.Errorf("served = %q", got)
	}
	if served[1].TLS.CertFile != "b.pem" || served[2].DisableH2C {
		t.Errorf("served = %+v: want the new certificate files, and 8082 as it runs", served)
	}
}
