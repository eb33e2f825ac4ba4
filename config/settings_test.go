package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// leafFields lists the paths of t's fields that hold a setting's value, in Settings'
// notation: our own config structs are entered (through pointers and slices); other
// types (url.URL, netip.Prefix, durations) are values in their own right.
func leafFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		path := prefix + f.Name
		ft := f.Type
		if ft.Kind() == reflect.Slice && ours(ft.Elem()) {
			out = append(out, leafFields(ft.Elem(), path+"[].")...)
			continue
		}
		if ft.Kind() == reflect.Pointer && ours(ft.Elem()) {
			ft = ft.Elem()
		}
		if ours(ft) {
			out = append(out, leafFields(ft, path+".")...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// ours reports whether t is one of this package's structs.
func ours(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t.PkgPath() == reflect.TypeFor[Config]().PkgPath()
}

// Every field of Config is in Settings exactly once (or is a command-line field), and every
// row of Settings names a real field: a new setting cannot be forgotten by reload.
func TestSettingsCoverConfig(t *testing.T) {
	rows := map[string]string{}
	for _, s := range Settings {
		if prev, dup := rows[s.Field]; dup {
			t.Errorf("field %s is in Settings twice (%s and %s)", s.Field, prev, s.Name)
		}
		rows[s.Field] = s.Name
		if s.Effect == "" {
			t.Errorf("setting %s has no Effect: say what a reload does with it", s.Name)
		}
	}
	for _, f := range leafFields(reflect.TypeFor[Config](), "") {
		if notSettings[f] {
			continue
		}
		if _, ok := rows[f]; !ok {
			t.Errorf("Config field %s is missing from config.Settings: add a row with its file name and what a reload does with it (config/settings.go)", f)
		}
		delete(rows, f)
	}
	for f, name := range rows {
		t.Errorf("Settings row %s names field %s, which Config does not have", name, f)
	}
	// Value follows every row's path without panicking, on a config with a TLS listener.
	c := Default()
	c.Listeners = append(c.Listeners, Listener{TLS: &TLS{ACME: &ACME{}}, Redirect: &Redirect{}})
	for _, s := range Settings {
		_ = s.Value(c)
	}
}

// Every setting is documented in config.hcl, under its block.
func TestSettingsInConfigHCL(t *testing.T) {
	b, err := os.ReadFile("../config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, s := range Settings {
		attr := s.Name[strings.LastIndex(s.Name, ".")+1:]
		if !regexp.MustCompile(`(?m)^\s*#?\s*` + regexp.QuoteMeta(attr) + `\s*=`).MatchString(text) {
			t.Errorf("setting %s is not in config.hcl: add it with its default and one line of why", s.Name)
		}
	}
}

// Value compares what a reload must compare: a changed listener's field shows in the
// listeners' values, a nil TLS block is nil.
func TestSettingValue(t *testing.T) {
	a, b := Default(), Default()
	b.Listeners[0].Address = "127.0.0.1:9"
	addr := Setting{Field: "Listeners[].Address"}
	if reflect.DeepEqual(addr.Value(a), addr.Value(b)) {
		t.Fatalf("listener addresses %v and %v compare equal", addr.Value(a), addr.Value(b))
	}
	cert := Setting{Field: "Listeners[].TLS.CertFile"}
	if got := cert.Value(a); !reflect.DeepEqual(got, map[string]any{}) {
		t.Fatalf("cert files with a plain listener = %#v, want none", got)
	}
	b.Listeners = append(b.Listeners, Listener{Address: "127.0.0.1:1"})
	if !reflect.DeepEqual(cert.Value(a), cert.Value(b)) {
		t.Fatalf("a plain listener more changed the certificate files: %v, %v", cert.Value(a), cert.Value(b))
	}
	grace := Setting{Field: "Drain.Grace"}
	b.Drain.Grace = time.Minute
	if grace.Value(b) != time.Minute {
		t.Fatalf("Drain.Grace = %v", grace.Value(b))
	}
}

// Issue 26 item 7: a renamed setting still loads by its old name, from the file and from
// the environment, as its new one; each use is recorded once with its place, for the one
// warning the caller logs. Both names in one file is an error that names both.
func TestRenamedSettingsStillLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.hcl")
	old := "upstream {\n  url = \"http://app:3000\"\n}\nlimits {\n  read_timeout = \"1m\"\n  gc_heap_floor_bytes = 1048576\n}\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]string{"-config", path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.RequestReadTimeout != time.Minute || c.Runtime.GCHeapFloorBytes != 1<<20 {
		t.Errorf("old names loaded as request_read_timeout %v, runtime.gc_heap_floor_bytes %d; want 1m and 1048576",
			c.Limits.RequestReadTimeout, c.Runtime.GCHeapFloorBytes)
	}
	want := []RenamedSetting{
		{Old: "limits.read_timeout", New: "limits.request_read_timeout", Where: path + ":5:3"},
		{Old: "limits.gc_heap_floor_bytes", New: "runtime.gc_heap_floor_bytes", Where: path + ":6:3"},
	}
	if !reflect.DeepEqual(c.Renamed, want) {
		t.Errorf("Renamed = %+v, want %+v", c.Renamed, want)
	}

	env := map[string]string{"DRAINPROXY_UPSTREAM_URL": "http://app:3000", "DRAINPROXY_LIMITS_READ_TIMEOUT": "2m"}
	c, err = ParseEnv(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want = []RenamedSetting{{Old: "limits.read_timeout", New: "limits.request_read_timeout", Where: "DRAINPROXY_LIMITS_READ_TIMEOUT"}}
	if c.Limits.RequestReadTimeout != 2*time.Minute || !reflect.DeepEqual(c.Renamed, want) {
		t.Errorf("from the environment: request_read_timeout %v, Renamed %+v; want 2m and %+v", c.Limits.RequestReadTimeout, c.Renamed, want)
	}

	// The new names record nothing.
	c, err = ParseEnv(nil, func(k string) string {
		return map[string]string{"DRAINPROXY_UPSTREAM_URL": "http://app:3000", "DRAINPROXY_LIMITS_REQUEST_READ_TIMEOUT": "2m",
			"DRAINPROXY_RUNTIME_GC_HEAP_FLOOR_BYTES": "0"}[k]
	}, io.Discard)
	if err != nil || len(c.Renamed) != 0 || c.Runtime.GCHeapFloorBytes != 0 {
		t.Errorf("new names: %v, Renamed %+v, heap floor %d", err, c.Renamed, c.Runtime.GCHeapFloorBytes)
	}

	both := "upstream {\n  url = \"http://app:3000\"\n}\nlimits {\n  read_timeout = \"1m\"\n  gc_heap_floor_bytes = 0\n  request_read_timeout = \"2m\"\n}\nruntime {\n  gc_heap_floor_bytes = 0\n}\n"
	if err := os.WriteFile(path, []byte(both), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Parse([]string{"-config", path}, io.Discard)
	for _, w := range []string{
		path + ":5:18: limits.read_timeout: is the old name of limits.request_read_timeout, which is set too; remove limits.read_timeout",
		path + ":6:25: limits.gc_heap_floor_bytes: is the old name of runtime.gc_heap_floor_bytes, which is set too; remove limits.gc_heap_floor_bytes",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("both names set: error %v, want a line %q", err, w)
		}
	}

	// A misspelt old name points at the new name, and the list of what limits takes
	// leaves the old names out.
	typo := "upstream {\n  url = \"http://app:3000\"\n}\nlimits {\n  read_timout = \"1m\"\n}\n"
	if err := os.WriteFile(path, []byte(typo), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Parse([]string{"-config", path}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "limits.read_timout: unknown setting; did you mean limits.request_read_timeout; limits takes") ||
		strings.Contains(err.Error(), " read_timeout,") || strings.Contains(err.Error(), "gc_heap_floor_bytes") {
		t.Errorf("a misspelt old name: error %v; want it to suggest limits.request_read_timeout and list no old name", err)
	}
}
