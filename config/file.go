package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/drainproxy/drainproxy/supervise"
)

// fileConfig is the schema of the config file. Every setting is optional (a nil pointer
// keeps the default); values stay raw here and are parsed by the shared value parsers,
// so that the file and the flags accept exactly the same things. config.hcl documents
// each one.
type fileConfig struct {
	Listeners   []listenerBlock   `hcl:"listener,block"`
	Upstream    *upstreamBlock    `hcl:"upstream,block"`
	Proxy       *proxyBlock       `hcl:"proxy,block"`
	Drain       *drainBlock       `hcl:"drain,block"`
	Admin       *adminBlock       `hcl:"admin,block"`
	HealthCheck *healthCheckBlock `hcl:"health_check,block"`
	App         *appBlock         `hcl:"app,block"`
	Log         *logBlock         `hcl:"log,block"`
	Limits      *limitsBlock      `hcl:"limits,block"`
	Runtime     *runtimeBlock     `hcl:"runtime,block"`
	Server      *serverBlock      `hcl:"server,block"`
}

// Renamed maps the old name of each renamed setting to its new one. The old name still
// loads (file, environment) as the new one, with a warning (Config.Renamed); setting
// both in one block is an error.
var Renamed = map[string]string{
	// A whole-request deadline, beside upstream.read_timeout, a progress timeout.
	"limits.read_timeout": "limits.request_read_timeout",
	// Not a limit on clients: how the garbage collector runs.
	"limits.gc_heap_floor_bytes": "runtime.gc_heap_floor_bytes",
}

type serverBlock struct {
	Engine *string `hcl:"engine,optional"`
}

// apply validates the server block and sets what it gives in sv.
func (b *serverBlock) apply(s section, sv *Server) {
	apply(s, "engine", b.Engine, oneOf(serverEngines()), &sv.Engine)
}

type listenerBlock struct {
	Address        string    `hcl:"address"`
	RedirectHTTPS  *bool     `hcl:"redirect_https,optional"`
	RedirectStatus *int      `hcl:"redirect_status,optional"`
	RedirectPort   *int      `hcl:"redirect_port,optional"`
	H2C            *bool     `hcl:"h2c,optional"`
	TLS            *tlsBlock `hcl:"tls,block"`
}

type tlsBlock struct {
	CertFile   *string    `hcl:"cert_file,optional"`
	KeyFile    *string    `hcl:"key_file,optional"`
	MinVersion *string    `hcl:"min_version,optional"`
	HSTS       *string    `hcl:"hsts,optional"`
	ACME       *acmeBlock `hcl:"acme,block"`
}

type acmeBlock struct {
	Domains      *[]string `hcl:"domains,optional"`
	Email        *string   `hcl:"email,optional"`
	CA           *string   `hcl:"ca,optional"`
	Staging      *bool     `hcl:"staging,optional"`
	TrustedRoots *[]string `hcl:"trusted_roots,optional"`
	Storage      *string   `hcl:"storage,optional"`
	AgreeTerms   *bool     `hcl:"agree_terms,optional"`
	Challenges   *[]string `hcl:"challenges,optional"`
}

type upstreamBlock struct {
	URL                   *string   `hcl:"url,optional"`
	Command               *[]string `hcl:"command,optional"`
	DialTimeout           *string   `hcl:"dial_timeout,optional"`
	ResponseHeaderTimeout *string   `hcl:"response_header_timeout,optional"`
	IdleConns             *int      `hcl:"idle_conns,optional"`
	IdleConnTimeout       *string   `hcl:"idle_conn_timeout,optional"`
	ReadTimeout           *string   `hcl:"read_timeout,optional"`
	SendTimeout           *string   `hcl:"send_timeout,optional"`
	KeepAlive             *bool     `hcl:"keepalive,optional"`

	MaxResponseHeaderBytes *int64  `hcl:"max_response_header_bytes,optional"`
	MaxRequests            *int    `hcl:"max_requests,optional"`
	QueueTimeout           *string `hcl:"queue_timeout,optional"`
}

type proxyBlock struct {
	HostHeader     *string   `hcl:"host_header,optional"`
	TrustedProxies *[]string `hcl:"trusted_proxies,optional"`
}

type drainBlock struct {
	Delay *string `hcl:"delay,optional"`
	// ReadinessFailDelay is drain.readiness_fail_delay (Drain.ReadinessFailDelay).
	ReadinessFailDelay *string `hcl:"readiness_fail_delay,optional"`
	Grace              *string `hcl:"grace,optional"`
	IdleClose          *string `hcl:"idle_close,optional"`
	HandshakeWait      *string `hcl:"handshake_wait,optional"`
	FlushTimeout       *string `hcl:"flush_timeout,optional"`
	// Issue 25: delay = "auto" and what the drain tells operators.
	Quiet            *string `hcl:"quiet,optional"`
	DelayMin         *string `hcl:"delay_min,optional"`
	DelayMax         *string `hcl:"delay_max,optional"`
	ProgressInterval *string `hcl:"progress_interval,optional"`
	TerminationLog   *string `hcl:"termination_log,optional"`
}

type adminBlock struct {
	Address   *string `hcl:"address,optional"`
	Token     *string `hcl:"token,optional"`
	TokenFile *string `hcl:"token_file,optional"`
	// AllowedHosts are names accepted in Host besides the listener's own address.
	AllowedHosts *[]string `hcl:"allowed_hosts,optional"`
}

type appBlock struct {
	StopSignal     *string   `hcl:"stop_signal,optional"`
	StopTimeout    *string   `hcl:"stop_timeout,optional"`
	StartTimeout   *string   `hcl:"start_timeout,optional"`
	Restart        *string   `hcl:"restart,optional"`
	MaxRestarts    *int      `hcl:"max_restarts,optional"`
	RestartWindow  *string   `hcl:"restart_window,optional"`
	OutputPrefix   *string   `hcl:"output_prefix,optional"`
	ForwardSignals *[]string `hcl:"forward_signals,optional"`
}

type healthCheckBlock struct {
	Path               *string `hcl:"path,optional"`
	Interval           *string `hcl:"interval,optional"`
	Timeout            *string `hcl:"timeout,optional"`
	HealthyThreshold   *int    `hcl:"healthy_threshold,optional"`
	UnhealthyThreshold *int    `hcl:"unhealthy_threshold,optional"`
	GRPC               *bool   `hcl:"grpc,optional"`
	Service            *string `hcl:"service,optional"`
}

type logBlock struct {
	Level     *string `hcl:"level,optional"`
	Format    *string `hcl:"format,optional"`
	AccessLog *string `hcl:"access_log,optional"`

	AccessLogFormat   *string `hcl:"access_log_format,optional"`
	AccessLogBuffer   *int    `hcl:"access_log_buffer,optional"`
	AccessLogWhenFull *string `hcl:"access_log_when_full,optional"`
}

type limitsBlock struct {
	MaxConnections      *int    `hcl:"max_connections,optional"`
	MaxHeaderBytes      *int    `hcl:"max_header_bytes,optional"`
	MaxRequestBodyBytes *int64  `hcl:"max_request_body_bytes,optional"`
	ReadHeaderTimeout   *string `hcl:"read_header_timeout,optional"`
	RequestReadTimeout  *string `hcl:"request_read_timeout,optional"`
	WriteTimeout        *string `hcl:"write_timeout,optional"`
	IdleTimeout         *string `hcl:"idle_timeout,optional"`
	SendTimeout         *string `hcl:"send_timeout,optional"`
	ClientBodyTimeout   *string `hcl:"client_body_timeout,optional"`
	UpgradeIdleTimeout  *string `hcl:"upgrade_idle_timeout,optional"`

	H2MaxConcurrentStreams *int    `hcl:"h2_max_concurrent_streams,optional"`
	H2WindowTimeout        *string `hcl:"h2_window_timeout,optional"`

	// The old names (Renamed).
	ReadTimeout      *string `hcl:"read_timeout,optional"`
	GCHeapFloorBytes *int64  `hcl:"gc_heap_floor_bytes,optional"`
}

type runtimeBlock struct {
	GCHeapFloorBytes *int64 `hcl:"gc_heap_floor_bytes,optional"`
}

// loadFile applies the config file src (named filename in messages) over cfg. It reports
// every problem it can find at once, in file order, one per line.
func loadFile(src []byte, filename string, cfg *Config) error {
	var probs problems
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	probs.addDiags(filename, diags)
	if diags.HasErrors() {
		return probs.err()
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		// ParseHCL always returns native syntax; anything else is a bug here.
		return fmt.Errorf("%s: internal error: unexpected body type %T", filename, f.Body)
	}

	// Every problem of the file in one run: what checkStructure reports is left out of
	// what gohcl decodes (it would report the same names again, less helpfully), a value
	// of the wrong type is left unset, and the values that remain are still validated.
	blocks, known := checkStructure(filename, body, &probs)
	var fc fileConfig
	diags = gohcl.DecodeBody(known, nil, &fc)
	for _, d := range diags {
		// HCL's type errors do not say which setting they are about; prefix it.
		if name := settingAt(blocks, d.Subject); name != "" {
			d.Summary = name + ": " + d.Summary
		}
	}
	probs.addDiags(filename, diags) // a value of the wrong type stays nil: unset

	sec := func(name string) section {
		s := section{name: name, file: filename, probs: &probs}
		if bs := blocks[name]; len(bs) > 0 {
			s.body = bs[0].Body
		}
		return s
	}
	if len(fc.Listeners) > 0 {
		cfg.Listeners = applyListeners(fc.Listeners, blocks["listener"], filename, &probs)
	}
	if b := fc.Upstream; b != nil {
		b.apply(sec("upstream"), &cfg.Upstream)
	}
	if b := fc.Proxy; b != nil {
		b.apply(sec("proxy"), &cfg.Proxy)
	}
	if b := fc.Drain; b != nil {
		b.apply(sec("drain"), &cfg.Drain)
	}
	if b := fc.Admin; b != nil {
		b.apply(sec("admin"), &cfg.Admin)
	}
	if b := fc.HealthCheck; b != nil {
		b.apply(sec("health_check"), &cfg.HealthCheck)
	}
	if b := fc.App; b != nil {
		b.apply(sec("app"), &cfg.App)
	}
	if b := fc.Log; b != nil {
		b.apply(sec("log"), &cfg.Log)
	}
	if b := fc.Limits; b != nil {
		b.apply(sec("limits"), &cfg.Limits)
		s := sec("limits")
		applyRenamed(s, "read_timeout", b.ReadTimeout, b.RequestReadTimeout != nil, parseDuration, &cfg.Limits.RequestReadTimeout, cfg)
		floorSet := fc.Runtime != nil && fc.Runtime.GCHeapFloorBytes != nil
		applyRenamed(s, "gc_heap_floor_bytes", b.GCHeapFloorBytes, floorSet, atLeast[int64](0), &cfg.Runtime.GCHeapFloorBytes, cfg)
	}
	if b := fc.Runtime; b != nil {
		apply(sec("runtime"), "gc_heap_floor_bytes", b.GCHeapFloorBytes, atLeast[int64](0), &cfg.Runtime.GCHeapFloorBytes)
	}
	if b := fc.Server; b != nil {
		b.apply(sec("server"), &cfg.Server)
	}
	return probs.err()
}

// apply validates the upstream block and sets what it gives in u.
func (b *upstreamBlock) apply(s section, u *Upstream) {
	if b.URL != nil {
		if parsed, err := parseUpstreamURL(*b.URL); err != nil {
			s.fail("url", -1, err)
		} else {
			u.URL = parsed
		}
	}
	apply(s, "command", b.Command, parseCommand, &u.Command)
	apply(s, "dial_timeout", b.DialTimeout, parseDuration, &u.DialTimeout)
	apply(s, "response_header_timeout", b.ResponseHeaderTimeout, parseDuration, &u.ResponseHeaderTimeout)
	apply(s, "idle_conns", b.IdleConns, atLeast(1), &u.IdleConns)
	apply(s, "idle_conn_timeout", b.IdleConnTimeout, parseDuration, &u.IdleConnTimeout)
	apply(s, "read_timeout", b.ReadTimeout, parseDuration, &u.ReadTimeout)
	apply(s, "send_timeout", b.SendTimeout, parseDuration, &u.SendTimeout)
	apply(s, "max_response_header_bytes", b.MaxResponseHeaderBytes, atLeast[int64](1024), &u.MaxResponseHeaderBytes)
	apply(s, "max_requests", b.MaxRequests, atLeast(1), &u.MaxRequests)
	apply(s, "queue_timeout", b.QueueTimeout, parseDuration, &u.QueueTimeout)
	if b.KeepAlive != nil {
		u.KeepAlive = *b.KeepAlive
	}
}

// apply validates the proxy block and sets what it gives in p.
func (b *proxyBlock) apply(s section, p *Proxy) {
	apply(s, "host_header", b.HostHeader, oneOf(hostHeaders()), &p.HostHeader)
	if b.TrustedProxies != nil {
		p.TrustedProxies = nil
		for i, v := range *b.TrustedProxies {
			if prefix, err := parseTrustedProxy(v); err != nil {
				s.fail("trusted_proxies", i, err)
			} else {
				p.TrustedProxies = append(p.TrustedProxies, prefix)
			}
		}
	}
}

// apply validates the drain block and sets what it gives in d.
func (b *drainBlock) apply(s section, d *Drain) {
	var delay delaySetting
	apply(s, "delay", b.Delay, parseDelay, &delay)
	if b.Delay != nil {
		d.Delay, d.DelayAuto = delay.fixed, delay.auto
	}
	apply(s, "readiness_fail_delay", b.ReadinessFailDelay, parseDuration, &d.ReadinessFailDelay)
	if d.ReadinessFailDelay > d.Delay && !d.DelayAuto && b.ReadinessFailDelay != nil && b.Delay != nil { // else checkWhole, after the flags
		s.fail("readiness_fail_delay", -1, readinessFailDelayError(d.ReadinessFailDelay, d.Delay))
	}
	apply(s, "quiet", b.Quiet, parsePositiveDuration, &d.Quiet)
	apply(s, "delay_min", b.DelayMin, parseDuration, &d.DelayMin)
	apply(s, "delay_max", b.DelayMax, parsePositiveDuration, &d.DelayMax)
	if d.DelayMin > d.DelayMax {
		s.fail("delay_min", -1, fmt.Errorf("%v is more than delay_max (%v); make delay_min at most delay_max", d.DelayMin, d.DelayMax))
	}
	apply(s, "progress_interval", b.ProgressInterval, parseDuration, &d.ProgressInterval)
	apply(s, "termination_log", b.TerminationLog, func(v string) (string, error) { return v, nil }, &d.TerminationLog)
	apply(s, "grace", b.Grace, parseDuration, &d.Grace)
	apply(s, "idle_close", b.IdleClose, parseDuration, &d.IdleClose)
	apply(s, "handshake_wait", b.HandshakeWait, parseDuration, &d.HandshakeWait)
	apply(s, "flush_timeout", b.FlushTimeout, parseDuration, &d.FlushTimeout)
}

// apply validates the admin block and sets what it gives in a.
func (b *adminBlock) apply(s section, a *Admin) {
	apply(s, "address", b.Address, parseAdminAddress, &a.Address)
	apply(s, "token", b.Token, parseAdminToken, &a.Token)
	if b.TokenFile != nil && *b.TokenFile != "" {
		if a.Token != "" {
			s.fail("token_file", -1, errors.New("is set as well as token; keep one of them"))
		} else {
			apply(s, "token_file", b.TokenFile, readTokenFile, &a.Token)
			a.TokenFile = *b.TokenFile
		}
	}
	if b.AllowedHosts != nil {
		a.AllowedHosts = nil
		for i, v := range *b.AllowedHosts {
			if h, err := parseAllowedHost(v); err != nil {
				s.fail("allowed_hosts", i, err)
			} else {
				a.AllowedHosts = append(a.AllowedHosts, h)
			}
		}
	}
}

// apply validates the health_check block and sets what it gives in h.
func (b *healthCheckBlock) apply(s section, h *HealthCheck) {
	apply(s, "path", b.Path, parseHealthPath, &h.Path)
	apply(s, "interval", b.Interval, parsePositiveDuration, &h.Interval)
	apply(s, "timeout", b.Timeout, parsePositiveDuration, &h.Timeout)
	apply(s, "healthy_threshold", b.HealthyThreshold, atLeast(1), &h.HealthyThreshold)
	apply(s, "unhealthy_threshold", b.UnhealthyThreshold, atLeast(1), &h.UnhealthyThreshold)
	if b.GRPC != nil {
		h.GRPC = *b.GRPC
	}
	if b.Service != nil {
		h.GRPCService = *b.Service
		if !h.GRPC && h.GRPCService != "" {
			s.fail("service", -1, errors.New("names the service of a gRPC health check; add grpc = true, or remove service"))
		}
	}
	if h.GRPC && h.Path != "" {
		s.fail("path", -1, errors.New("is for HTTP checks; with grpc = true the check calls grpc.health.v1.Health/Check (name the service with service), so remove path"))
	}
}

// apply validates the app block and sets what it gives in a.
func (b *appBlock) apply(s section, a *App) {
	apply(s, "stop_signal", b.StopSignal, supervise.ParseStopSignal, &a.StopSignal)
	apply(s, "stop_timeout", b.StopTimeout, parsePositiveDuration, &a.StopTimeout)
	apply(s, "start_timeout", b.StartTimeout, parsePositiveDuration, &a.StartTimeout)
	apply(s, "restart", b.Restart, supervise.ParseRestart, &a.Restart)
	apply(s, "max_restarts", b.MaxRestarts, atLeast(1), &a.MaxRestarts)
	apply(s, "restart_window", b.RestartWindow, parsePositiveDuration, &a.RestartWindow)
	apply(s, "output_prefix", b.OutputPrefix, func(v string) (string, error) { return v, nil }, &a.OutputPrefix)
	if b.ForwardSignals != nil {
		a.ForwardSignals = nil
		for i, v := range *b.ForwardSignals {
			if sig, err := supervise.ParseForwardSignal(v); err != nil {
				s.fail("forward_signals", i, err)
			} else {
				a.ForwardSignals = append(a.ForwardSignals, sig)
			}
		}
	}
}

// apply validates the log block and sets what it gives in l.
func (b *logBlock) apply(s section, l *Log) {
	apply(s, "level", b.Level, oneOf(logLevels()), &l.Level)
	apply(s, "format", b.Format, oneOf(logFormats()), &l.Format)
	apply(s, "access_log", b.AccessLog, parseAccessLog, &l.AccessLog)
	apply(s, "access_log_format", b.AccessLogFormat, oneOf(accessLogFormats()), &l.AccessLogFormat)
	apply(s, "access_log_buffer", b.AccessLogBuffer, atLeast(1), &l.AccessLogBuffer)
	apply(s, "access_log_when_full", b.AccessLogWhenFull, oneOf(accessLogWhenFull()), &l.AccessLogWhenFull)
}

// apply validates the limits block and sets what it gives in l.
func (b *limitsBlock) apply(s section, l *Limits) {
	apply(s, "max_connections", b.MaxConnections, atLeast(0), &l.MaxConnections)
	apply(s, "max_header_bytes", b.MaxHeaderBytes, atLeast(0), &l.MaxHeaderBytes)
	apply(s, "max_request_body_bytes", b.MaxRequestBodyBytes, atLeast[int64](0), &l.MaxRequestBodyBytes)
	apply(s, "read_header_timeout", b.ReadHeaderTimeout, parseDuration, &l.ReadHeaderTimeout)
	apply(s, "request_read_timeout", b.RequestReadTimeout, parseDuration, &l.RequestReadTimeout)
	apply(s, "write_timeout", b.WriteTimeout, parseDuration, &l.WriteTimeout)
	apply(s, "idle_timeout", b.IdleTimeout, parseDuration, &l.IdleTimeout)
	apply(s, "send_timeout", b.SendTimeout, parseDuration, &l.SendTimeout)
	apply(s, "client_body_timeout", b.ClientBodyTimeout, parseDuration, &l.ClientBodyTimeout)
	apply(s, "upgrade_idle_timeout", b.UpgradeIdleTimeout, parseDuration, &l.UpgradeIdleTimeout)
	apply(s, "h2_max_concurrent_streams", b.H2MaxConcurrentStreams, atLeast(1), &l.H2MaxConcurrentStreams)
	apply(s, "h2_window_timeout", b.H2WindowTimeout, parseDuration, &l.H2WindowTimeout)
}

func applyListeners(decoded []listenerBlock, blocks []*hclsyntax.Block, filename string, probs *problems) []Listener {
	var out []Listener
	for i, l := range decoded {
		s := section{name: "listener", file: filename, probs: probs}
		if i < len(blocks) { // gohcl decodes one per block, in order
			s.body = blocks[i].Body
			if s.body.Attributes["address"] == nil {
				continue // gohcl reported the missing address
			}
		}
		addr, err := parseListenAddress(l.Address)
		switch {
		case err != nil:
			s.fail("address", -1, err)
		case slices.ContainsFunc(out, func(o Listener) bool { return o.Address == addr }):
			s.fail("address", -1, fmt.Errorf("%q is already a listener above; each listener needs its own address", addr))
		default:
			ln := applyListenerTLS(l, addr, s)
			if l.H2C != nil {
				if l.TLS != nil {
					s.fail("h2c", -1, errors.New("is for a plain-HTTP listener; one with a tls block offers HTTP/2 by ALPN, so remove h2c"))
				}
				ln.DisableH2C = !*l.H2C
			}
			out = append(out, ln)
		}
	}
	checkListenersTLS(out, decoded, blocks, filename, probs)
	return out
}

// settingAt names the setting ("block.attr") whose definition contains rng, or "".
func settingAt(blocks map[string][]*hclsyntax.Block, rng *hcl.Range) string {
	if rng == nil {
		return ""
	}
	for typ, bs := range blocks {
		for _, b := range bs {
			if name := settingIn(typ, b.Body, rng); name != "" {
				return name
			}
		}
	}
	return ""
}

// settingIn names the setting of body (a block called path), or of a block nested in it,
// whose definition contains rng, or "".
func settingIn(path string, body *hclsyntax.Body, rng *hcl.Range) string {
	for name, a := range body.Attributes {
		if a.SrcRange.ContainsOffset(rng.Start.Byte) {
			return path + "." + name
		}
	}
	for _, nb := range body.Blocks {
		if name := settingIn(path+"."+nb.Type, nb.Body, rng); name != "" {
			return name
		}
	}
	return ""
}

// apply parses a set (non-nil) file value into dst, or records why it cannot.
func apply[V, T any](s section, attr string, v *V, parse func(V) (T, error), dst *T) {
	if v == nil {
		return
	}
	t, err := parse(*v)
	if err != nil {
		s.fail(attr, -1, err)
		return
	}
	*dst = t
}

// applyRenamed applies old, a renamed setting of s's block (Renamed), as its new name and
// records that it was given by the old one; newSet is whether the new name is set in the
// same file too, which is an error: one of them would silently lose.
func applyRenamed[V, T any](s section, old string, v *V, newSet bool, parse func(V) (T, error), dst *T, cfg *Config) {
	if v == nil {
		return
	}
	oldName := s.name + "." + old
	newName := Renamed[oldName]
	if newSet {
		s.fail(old, -1, fmt.Errorf("is the old name of %s, which is set too; remove %s", newName, oldName))
		return
	}
	apply(s, old, v, parse, dst)
	cfg.Renamed = append(cfg.Renamed, RenamedSetting{Old: oldName, New: newName, Where: s.where(old)})
}

// where is attribute attr's place for a message: FILE:LINE:COL, or the environment
// variable it came from.
func (s section) where(attr string) string {
	if a := s.body.Attributes[attr]; a != nil && !strings.HasPrefix(s.file, "$") {
		return fmt.Sprintf("%s:%d:%d", s.file, a.NameRange.Start.Line, a.NameRange.Start.Column)
	}
	return strings.TrimPrefix(s.file, "$")
}

// section is one block of the file, for reporting a value's problem at its position.
type section struct {
	name  string
	file  string
	body  *hclsyntax.Body
	probs *problems
}

// fail records err against attribute attr, pointing at the value; at element elem of a
// list value when elem >= 0.
func (s section) fail(attr string, elem int, err error) {
	var rng hcl.Range
	if s.body != nil {
		if a := s.body.Attributes[attr]; a != nil {
			rng = a.Expr.Range()
			if t, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && elem >= 0 && elem < len(t.Exprs) {
				rng = t.Exprs[elem].Range()
			}
		}
	}
	s.probs.add(s.file, rng, fmt.Sprintf("%s.%s: %v", s.name, attr, err))
}

// blockSchema is what one block type allows.
type blockSchema struct {
	attrs      []string // sorted
	repeatable bool
	nested     map[string]blockSchema // the blocks allowed inside (listener { tls { acme {} } })
}

// blockSchemas derives, from fileConfig's tags, what each top-level block allows, so
// the struct stays the single place where the schema is written.
func blockSchemas() map[string]blockSchema {
	return blockSchemasOf(reflect.TypeFor[fileConfig]())
}

// blockSchemasOf returns the schemas of the blocks that the struct type t declares.
func blockSchemasOf(t reflect.Type) map[string]blockSchema {
	out := make(map[string]blockSchema, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, kind, _ := strings.Cut(f.Tag.Get("hcl"), ",")
		if kind != "block" {
			continue
		}
		bt := f.Type
		repeatable := bt.Kind() == reflect.Slice
		if repeatable || bt.Kind() == reflect.Pointer {
			bt = bt.Elem()
		}
		schema, _ := gohcl.ImpliedBodySchema(reflect.New(bt).Interface())
		var attrs []string
		for _, a := range schema.Attributes {
			attrs = append(attrs, a.Name)
		}
		sort.Strings(attrs)
		out[name] = blockSchema{attrs: attrs, repeatable: repeatable, nested: blockSchemasOf(bt)}
	}
	return out
}

// checkStructure reports unknown blocks and settings, labels, nested blocks and repeated
// single blocks, each with what is allowed instead and, for a misspelled name, the name
// meant. It returns the blocks by type, in file order, and a copy of body without what it
// reported, for decoding the rest.
func checkStructure(filename string, body *hclsyntax.Body, probs *problems) (map[string][]*hclsyntax.Block, *hclsyntax.Body) {
	schemas := blockSchemas()
	blockNames := slices.Sorted(maps.Keys(schemas))
	allowedBlocks := "the blocks are " + strings.Join(blockNames, ", ")

	// belongsIn names the blocks that do have a setting called attr, for a hint.
	belongsIn := func(attr string) string {
		var in []string
		for _, b := range blockNames {
			if slices.Contains(schemas[b].attrs, attr) {
				in = append(in, b+" { "+attr+" = ... }")
			}
		}
		if len(in) == 0 {
			return ""
		}
		return "; did you mean " + strings.Join(in, " or ")
	}

	known := &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, SrcRange: body.SrcRange, EndRange: body.EndRange}
	for name, a := range body.Attributes {
		hint := belongsIn(name)
		if hint == "" {
			hint = didYouMean(name, blockNames, " { ... }")
		}
		probs.add(filename, a.NameRange, fmt.Sprintf(
			"%s: settings go inside a block%s; %s", name, hint, allowedBlocks))
	}
	blocks := make(map[string][]*hclsyntax.Block)
	for _, b := range body.Blocks {
		schema, ok := schemas[b.Type]
		if !ok {
			probs.add(filename, b.TypeRange, fmt.Sprintf("%s: unknown block%s; %s",
				b.Type, didYouMean(b.Type, blockNames, " { ... }"), allowedBlocks))
			continue
		}
		if len(b.Labels) > 0 {
			probs.add(filename, b.LabelRanges[0], fmt.Sprintf(
				"%s: the block takes no label; write %s { ... }", b.Type, b.Type))
			continue
		}
		if prev := blocks[b.Type]; len(prev) > 0 && !schema.repeatable {
			probs.add(filename, b.TypeRange, fmt.Sprintf(
				"%s: duplicate block; only one is allowed and the first is on line %d; merge them",
				b.Type, prev[0].TypeRange.Start.Line))
			continue
		}
		blocks[b.Type] = append(blocks[b.Type], b)
		kb := *b
		kb.Body = checkBlockBody(filename, b.Type, b.Body, schema, belongsIn, probs)
		known.Blocks = append(known.Blocks, &kb)
	}
	return blocks, known
}

// checkBlockBody reports unknown settings and blocks inside a block (called path, such as
// "listener.tls"), then checks the blocks nested in it the same way. It returns a copy of
// body without what it reported.
func checkBlockBody(filename, path string, body *hclsyntax.Body, schema blockSchema, belongsIn func(string) string, probs *problems) *hclsyntax.Body {
	name := path[strings.LastIndex(path, ".")+1:]
	current := slices.DeleteFunc(slices.Clone(schema.attrs), func(a string) bool { _, old := Renamed[path+"."+a]; return old })
	allowedAttrs := name + " takes " + strings.Join(current, ", ")
	nested := slices.Sorted(maps.Keys(schema.nested))
	if len(nested) > 0 {
		allowedAttrs += " and the block " + strings.Join(nested, ", ")
	}
	known := &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, SrcRange: body.SrcRange, EndRange: body.EndRange}
	for attr, a := range body.Attributes {
		if slices.Contains(schema.attrs, attr) {
			known.Attributes[attr] = a
			continue
		}
		hint := didYouMean(attr, schema.attrs, "")
		if renamed, ok := Renamed[path+"."+strings.TrimPrefix(hint, "; did you mean ")]; ok {
			hint = "; did you mean " + renamed // an old name's typo: the new name
		}
		if hint == "" && !strings.Contains(path, ".") {
			hint = belongsIn(attr)
		}
		if hint == "" {
			hint = didYouMean(attr, nested, " { ... }")
		}
		probs.add(filename, a.NameRange, fmt.Sprintf(
			"%s.%s: unknown setting%s; %s", path, attr, hint, allowedAttrs))
	}
	for _, nb := range body.Blocks {
		ns, ok := schema.nested[nb.Type]
		switch {
		case len(schema.nested) == 0:
			probs.add(filename, nb.TypeRange, fmt.Sprintf(
				"%s.%s: blocks cannot be nested; %s", path, nb.Type, allowedAttrs))
		case !ok:
			probs.add(filename, nb.TypeRange, fmt.Sprintf(
				"%s.%s: unknown block%s; %s", path, nb.Type, didYouMean(nb.Type, nested, " { ... }"), allowedAttrs))
		default:
			kb := *nb
			kb.Body = checkBlockBody(filename, path+"."+nb.Type, nb.Body, ns, belongsIn, probs)
			known.Blocks = append(known.Blocks, &kb)
		}
	}
	return known
}

// didYouMean is "; did you mean NAME" (NAME followed by suffix) for the candidate that a
// misspelling of name most likely meant, or "" when none is close: at most a third of
// the letters wrong, two at most.
func didYouMean(name string, candidates []string, suffix string) string {
	best, bestDist := "", min(2, max(1, len(name)/3))+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + suffix
}

// editDistance is the Damerau-Levenshtein distance (optimal string alignment) of a and b:
// the insertions, deletions, substitutions and swaps of neighbours that turn one into
// the other.
func editDistance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// problem is one line of a config error.
type problem struct {
	file string
	pos  hcl.Pos // zero when there is no position
	text string
}

type problems []problem

func (p *problems) add(file string, rng hcl.Range, text string) {
	*p = append(*p, problem{file: file, pos: rng.Start, text: text})
}

// addDiags adds HCL's error diagnostics as "summary: detail" on one line. Only the first
// at any one position is kept: HCL follows "Variables not allowed" with a second,
// confusing "value must be known" for the same expression.
func (p *problems) addDiags(file string, diags hcl.Diagnostics) {
	seen := make(map[hcl.Pos]bool)
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Subject != nil {
			if seen[d.Subject.Start] {
				continue
			}
			seen[d.Subject.Start] = true
		}
		text := strings.TrimSuffix(d.Summary, ".")
		detail := strings.Join(strings.Fields(d.Detail), " ")
		// gohcl's type errors say it twice: "Unsuitable value type: Unsuitable value: ...".
		detail = strings.TrimPrefix(detail, "Unsuitable value: ")
		if detail != "" {
			text += ": " + detail
		}
		var rng hcl.Range
		if d.Subject != nil {
			rng = *d.Subject
		}
		p.add(file, rng, text)
	}
}

// err returns the problems as one error, a line per problem in file order, or nil.
func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	sorted := slices.Clone(p)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].pos.Byte < sorted[j].pos.Byte })
	lines := make([]string, len(sorted))
	for i, pr := range sorted {
		if pr.pos.Line > 0 && !strings.HasPrefix(pr.file, "$") { // "$VAR": the environment
			lines[i] = fmt.Sprintf("%s:%d:%d: %s", pr.file, pr.pos.Line, pr.pos.Column, pr.text)
		} else {
			lines[i] = fmt.Sprintf("%s: %s", pr.file, pr.text)
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}
