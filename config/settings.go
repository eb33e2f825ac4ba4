package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Effect is what a configuration reload (SIGHUP) does when a setting's value changed.
type Effect string

// The effects a reload can have. Each setting has exactly one (Settings).
const (
	// RebuildsProxy: a new proxy is built and swapped in; requests in flight finish on the
	// old one.
	RebuildsProxy Effect = "rebuilds the proxy"
	// ReopensAccessLog: a new access log is opened and swapped in; the old one flushes.
	ReopensAccessLog Effect = "reopens the access log"
	// ResetsHealthCheck: the health checker takes the new options.
	ResetsHealthCheck Effect = "resets the health check"
	// AppliedInPlace: the running part takes the new value (log level, admin token,
	// certificate files).
	AppliedInPlace Effect = "applied in place"
	// PerListener: listeners are compared by address; one only in the new file is opened,
	// one only in the running one is drained and removed, one whose settings changed needs
	// an upgrade.
	PerListener Effect = "per listener: added, removed, or an upgrade"
	// NeedsUpgrade: a reload cannot apply it; it takes an upgrade (SIGUSR2) or a restart.
	NeedsUpgrade Effect = "needs an upgrade (SIGUSR2) or a restart"
)

// Setting is one setting of the configuration file.
type Setting struct {
	// Name is the setting as written in the file: "block.attribute" (listener settings:
	// "listener.tls.acme.domains").
	Name string
	// Field is the path of the Config field it fills: "Upstream.DialTimeout"; a slice
	// element is entered with "[]" ("Listeners[].Address").
	Field string
	// Effect is what a reload does when it changed.
	Effect Effect
	// Supervised, when set, replaces Effect in supervised mode (an app started with
	// "-- COMMAND"): there the upstream URL is the template for each app instance's port.
	Supervised Effect
}

// EffectFor is s's Effect in supervised mode or not.
func (s Setting) EffectFor(supervised bool) Effect {
	if supervised && s.Supervised != "" {
		return s.Supervised
	}
	return s.Effect
}

// Value is s's value in c, for comparing two configurations. A path through a slice gives
// a map of the elements' values by the element's Address (listeners are told apart by
// address, not by their order), leaving out the nil ones; a nil pointer on the way gives
// nil.
func (s Setting) Value(c *Config) any {
	return valueAt(reflect.ValueOf(c).Elem(), strings.Split(s.Field, "."))
}

func valueAt(v reflect.Value, path []string) any {
	for i, step := range path {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return nil
			}
			v = v.Elem()
		}
		if name, ok := strings.CutSuffix(step, "[]"); ok {
			list := v.FieldByName(name)
			out := map[string]any{}
			for j := range list.Len() {
				key := fmt.Sprint(j)
				if a := list.Index(j).FieldByName("Address"); a.IsValid() {
					key = a.String()
				}
				if x := valueAt(list.Index(j), path[i+1:]); x != nil {
					out[key] = x
				}
			}
			return out
		}
		v = v.FieldByName(step)
		if !v.IsValid() {
			panic(fmt.Sprintf("config: no field %q", step))
		}
	}
	return v.Interface()
}

// Settings is every setting of the file, once, with what a reload does with it. A test
// holds it to the Config type (every field is here) and to config.hcl (every name is
// documented there). Adding a setting: its field and default (config.go), its HCL
// attribute and validation (file.go), a row here, config.hcl, docs/configuration.md, and
// the part that uses it.
var Settings = []Setting{
	{Name: "listener.address", Field: "Listeners[].Address", Effect: PerListener},
	{Name: "listener.redirect_status", Field: "Listeners[].Redirect.Status", Effect: PerListener},
	{Name: "listener.redirect_port", Field: "Listeners[].Redirect.Port", Effect: PerListener},
	{Name: "listener.h2c", Field: "Listeners[].DisableH2C", Effect: PerListener},
	{Name: "listener.tls.cert_file", Field: "Listeners[].TLS.CertFile", Effect: AppliedInPlace},
	{Name: "listener.tls.key_file", Field: "Listeners[].TLS.KeyFile", Effect: AppliedInPlace},
	{Name: "listener.tls.min_version", Field: "Listeners[].TLS.MinVersion", Effect: PerListener},
	{Name: "listener.tls.hsts", Field: "Listeners[].TLS.HSTS", Effect: PerListener},
	{Name: "listener.tls.acme.domains", Field: "Listeners[].TLS.ACME.Domains", Effect: PerListener},
	{Name: "listener.tls.acme.email", Field: "Listeners[].TLS.ACME.Email", Effect: PerListener},
	{Name: "listener.tls.acme.ca", Field: "Listeners[].TLS.ACME.CA", Effect: PerListener},
	{Name: "listener.tls.acme.staging", Field: "Listeners[].TLS.ACME.Staging", Effect: PerListener},
	{Name: "listener.tls.acme.trusted_roots", Field: "Listeners[].TLS.ACME.TrustedRoots", Effect: PerListener},
	{Name: "listener.tls.acme.storage", Field: "Listeners[].TLS.ACME.Storage", Effect: PerListener},
	{Name: "listener.tls.acme.agree_terms", Field: "Listeners[].TLS.ACME.AgreeTerms", Effect: PerListener},
	{Name: "listener.tls.acme.challenges", Field: "Listeners[].TLS.ACME.Challenges", Effect: PerListener},

	{Name: "upstream.url", Field: "Upstream.URL", Effect: RebuildsProxy, Supervised: NeedsUpgrade},
	{Name: "upstream.command", Field: "Upstream.Command", Effect: NeedsUpgrade},
	{Name: "upstream.dial_timeout", Field: "Upstream.DialTimeout", Effect: RebuildsProxy},
	{Name: "upstream.response_header_timeout", Field: "Upstream.ResponseHeaderTimeout", Effect: RebuildsProxy},
	{Name: "upstream.idle_conns", Field: "Upstream.IdleConns", Effect: RebuildsProxy},
	{Name: "upstream.idle_conn_timeout", Field: "Upstream.IdleConnTimeout", Effect: RebuildsProxy},
	{Name: "upstream.read_timeout", Field: "Upstream.ReadTimeout", Effect: RebuildsProxy},
	{Name: "upstream.send_timeout", Field: "Upstream.SendTimeout", Effect: RebuildsProxy},
	{Name: "upstream.max_response_header_bytes", Field: "Upstream.MaxResponseHeaderBytes", Effect: RebuildsProxy},
	{Name: "upstream.keepalive", Field: "Upstream.KeepAlive", Effect: RebuildsProxy},
	{Name: "upstream.max_requests", Field: "Upstream.MaxRequests", Effect: RebuildsProxy},
	{Name: "upstream.queue_timeout", Field: "Upstream.QueueTimeout", Effect: RebuildsProxy},

	{Name: "proxy.host_header", Field: "Proxy.HostHeader", Effect: RebuildsProxy},
	{Name: "proxy.trusted_proxies", Field: "Proxy.TrustedProxies", Effect: RebuildsProxy},

	{Name: "drain.delay", Field: "Drain.Delay", Effect: NeedsUpgrade},
	{Name: "drain.readiness_fail_delay", Field: "Drain.ReadinessFailDelay", Effect: NeedsUpgrade},
	{Name: "drain.grace", Field: "Drain.Grace", Effect: NeedsUpgrade},
	{Name: "drain.idle_close", Field: "Drain.IdleClose", Effect: NeedsUpgrade},
	{Name: "drain.handshake_wait", Field: "Drain.HandshakeWait", Effect: NeedsUpgrade},
	{Name: "drain.flush_timeout", Field: "Drain.FlushTimeout", Effect: NeedsUpgrade},
	{Name: "drain.delay", Field: "Drain.DelayAuto", Effect: NeedsUpgrade}, // delay = "auto"
	{Name: "drain.quiet", Field: "Drain.Quiet", Effect: NeedsUpgrade},
	{Name: "drain.delay_min", Field: "Drain.DelayMin", Effect: NeedsUpgrade},
	{Name: "drain.delay_max", Field: "Drain.DelayMax", Effect: NeedsUpgrade},
	{Name: "drain.progress_interval", Field: "Drain.ProgressInterval", Effect: NeedsUpgrade},
	{Name: "drain.termination_log", Field: "Drain.TerminationLog", Effect: NeedsUpgrade},

	{Name: "admin.address", Field: "Admin.Address", Effect: NeedsUpgrade},
	{Name: "admin.token", Field: "Admin.Token", Effect: AppliedInPlace},
	{Name: "admin.token_file", Field: "Admin.TokenFile", Effect: AppliedInPlace},
	{Name: "admin.allowed_hosts", Field: "Admin.AllowedHosts", Effect: NeedsUpgrade},

	{Name: "health_check.path", Field: "HealthCheck.Path", Effect: ResetsHealthCheck},
	{Name: "health_check.interval", Field: "HealthCheck.Interval", Effect: ResetsHealthCheck},
	{Name: "health_check.timeout", Field: "HealthCheck.Timeout", Effect: ResetsHealthCheck},
	{Name: "health_check.healthy_threshold", Field: "HealthCheck.HealthyThreshold", Effect: ResetsHealthCheck},
	{Name: "health_check.unhealthy_threshold", Field: "HealthCheck.UnhealthyThreshold", Effect: ResetsHealthCheck},
	{Name: "health_check.grpc", Field: "HealthCheck.GRPC", Effect: ResetsHealthCheck},
	{Name: "health_check.service", Field: "HealthCheck.GRPCService", Effect: ResetsHealthCheck},

	{Name: "app.stop_signal", Field: "App.StopSignal", Effect: NeedsUpgrade},
	{Name: "app.stop_timeout", Field: "App.StopTimeout", Effect: NeedsUpgrade},
	{Name: "app.start_timeout", Field: "App.StartTimeout", Effect: NeedsUpgrade},
	{Name: "app.restart", Field: "App.Restart", Effect: NeedsUpgrade},
	{Name: "app.max_restarts", Field: "App.MaxRestarts", Effect: NeedsUpgrade},
	{Name: "app.restart_window", Field: "App.RestartWindow", Effect: NeedsUpgrade},
	{Name: "app.output_prefix", Field: "App.OutputPrefix", Effect: NeedsUpgrade},
	{Name: "app.forward_signals", Field: "App.ForwardSignals", Effect: NeedsUpgrade},

	{Name: "log.level", Field: "Log.Level", Effect: AppliedInPlace},
	{Name: "log.format", Field: "Log.Format", Effect: NeedsUpgrade},
	{Name: "log.access_log", Field: "Log.AccessLog", Effect: ReopensAccessLog},
	{Name: "log.access_log_format", Field: "Log.AccessLogFormat", Effect: ReopensAccessLog},
	{Name: "log.access_log_buffer", Field: "Log.AccessLogBuffer", Effect: ReopensAccessLog},
	{Name: "log.access_log_when_full", Field: "Log.AccessLogWhenFull", Effect: ReopensAccessLog},

	{Name: "limits.max_connections", Field: "Limits.MaxConnections", Effect: NeedsUpgrade},
	{Name: "limits.max_header_bytes", Field: "Limits.MaxHeaderBytes", Effect: NeedsUpgrade},
	{Name: "limits.max_request_body_bytes", Field: "Limits.MaxRequestBodyBytes", Effect: RebuildsProxy},
	{Name: "limits.read_header_timeout", Field: "Limits.ReadHeaderTimeout", Effect: NeedsUpgrade},
	{Name: "limits.request_read_timeout", Field: "Limits.RequestReadTimeout", Effect: NeedsUpgrade},
	{Name: "limits.write_timeout", Field: "Limits.WriteTimeout", Effect: NeedsUpgrade},
	{Name: "limits.idle_timeout", Field: "Limits.IdleTimeout", Effect: NeedsUpgrade},
	{Name: "limits.send_timeout", Field: "Limits.SendTimeout", Effect: RebuildsProxy},
	{Name: "limits.client_body_timeout", Field: "Limits.ClientBodyTimeout", Effect: RebuildsProxy},
	{Name: "limits.upgrade_idle_timeout", Field: "Limits.UpgradeIdleTimeout", Effect: RebuildsProxy},
	{Name: "limits.h2_max_concurrent_streams", Field: "Limits.H2MaxConcurrentStreams", Effect: NeedsUpgrade},
	{Name: "limits.h2_window_timeout", Field: "Limits.H2WindowTimeout", Effect: RebuildsProxy},

	{Name: "runtime.gc_heap_floor_bytes", Field: "Runtime.GCHeapFloorBytes", Effect: NeedsUpgrade},

	{Name: "server.engine", Field: "Server.Engine", Effect: NeedsUpgrade},
}

// notSettings are the Config fields that no file sets: the command line's own.
var notSettings = map[string]bool{"Source": true, "ShowVersion": true, "CheckOnly": true,
	"Renamed[].Old": true, "Renamed[].New": true, "Renamed[].Where": true}
