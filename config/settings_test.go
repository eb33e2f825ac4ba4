package config

import (
	"os"
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
