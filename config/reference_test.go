package config

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The configuration reference cannot drift from the code (issue 24 item 3): every setting
// the file accepts is in config.hcl (with its default; TestParse holds config.hcl to
// Default) and in the generated table of docs/configuration.md, with the same default,
// environment variable and reload effect; every flag is in the flags table of
// docs/configuration.md with the default -h prints.
//
// After adding or changing a setting, regenerate the table:
//
//	go test ./config -run TestConfigReference -update

var update = flag.Bool("update", false, "rewrite the generated settings table of docs/configuration.md")

const (
	referencePath  = "../docs/configuration.md"
	referenceBegin = "<!-- settings table: generated from config.hcl and package config by `go test ./config -run TestConfigReference -update`; do not edit by hand -->"
	referenceEnd   = "<!-- end of the settings table -->"
)

// schemaSettings lists every setting the file accepts, "block.attr" and
// "listener.tls.acme.domains", in the order of fileConfig.
func schemaSettings() []string {
	var out []string
	var walk func(prefix string, schemas map[string]blockSchema, order []string)
	walk = func(prefix string, schemas map[string]blockSchema, order []string) {
		for _, name := range order {
			s := schemas[name]
			for _, a := range s.attrs {
				if _, old := Renamed[prefix+name+"."+a]; !old { // documented by its new name
					out = append(out, prefix+name+"."+a)
				}
			}
			nested := make([]string, 0, len(s.nested))
			for n := range s.nested {
				nested = append(nested, n)
			}
			slices.Sort(nested)
			walk(prefix+name+".", s.nested, nested)
		}
	}
	top := []string{"listener", "upstream", "proxy", "drain", "admin", "health_check", "app", "log", "limits"}
	schemas := blockSchemas()
	for _, name := range slices.Sorted(maps.Keys(schemas)) { // in one order every run
		if !slices.Contains(top, name) {
			top = append(top, name) // a block added later, at the end
		}
	}
	walk("", schemas, top)
	return out
}

// hclEntry is what config.hcl says about one setting.
type hclEntry struct {
	value     string // as written: "30s" with its quotes, 1024, []
	commented bool   // only in a commented-out example block
	why       string // the comment lines above it
}

// configHCLEntries reads config.hcl: for each setting, its first entry under its block
// (the listener's nested blocks are commented out there, so commented entries count for
// the listener's settings only).
func configHCLEntries(t *testing.T) map[string]hclEntry {
	t.Helper()
	b, err := os.ReadFile("../config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	attr := regexp.MustCompile(`^(#?)\s*([a-z_0-9]+)\s*=\s*(.*)$`)
	block := regexp.MustCompile(`^(#?)\s*([a-z_]+)\s*\{\s*$`)
	out := map[string]hclEntry{}
	var path []string
	var why []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		bare := strings.TrimSpace(strings.TrimPrefix(line, "#"))
		switch {
		case block.MatchString(line):
			m := block.FindStringSubmatch(line)
			if m[1] == "" || len(path) > 0 || m[2] == "listener" {
				path = append(path, m[2])
			}
			why = nil
		case bare == "}":
			if len(path) > 0 {
				path = path[:len(path)-1]
			}
			why = nil
		case attr.MatchString(line) && len(path) > 0:
			m := attr.FindStringSubmatch(line)
			name := strings.Join(path, ".") + "." + m[2]
			if _, seen := out[name]; !seen {
				out[name] = hclEntry{value: strings.TrimSpace(m[3]), commented: m[1] == "#", why: strings.Join(why, " ")}
			}
			why = nil
		case strings.HasPrefix(line, "#") && len(path) > 0:
			why = append(why, strings.TrimSpace(strings.TrimLeft(bare, "#")))
		default:
			why = nil
		}
	}
	return out
}

// referenceTable renders the generated table of docs/configuration.md.
func referenceTable(t *testing.T) string {
	t.Helper()
	entries := configHCLEntries(t)
	effects := map[string]Effect{}
	for _, s := range Settings {
		effects[s.Name] = s.EffectFor(false)
	}
	envs := map[string]string{}
	for _, e := range EnvSettings() {
		envs[e.Setting] = e.Var
	}
	var b strings.Builder
	b.WriteString(referenceBegin + "\n\n")
	b.WriteString("| setting | default | environment | on reload | what for (from config.hcl) |\n|---|---|---|---|---|\n")
	for _, name := range schemaSettings() {
		e := entries[name]
		def := "`" + strings.ReplaceAll(e.value, "|", `\|`) + "`"
		if e.commented {
			def += " (as in the commented example)"
		}
		env := "—"
		if v := envs[name]; v != "" {
			env = "`" + v + "`"
		}
		effect := string(effects[name])
		if effect == "" {
			effect = "—"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", name, def, env, effect, strings.ReplaceAll(e.why, "|", `\|`))
	}
	b.WriteString("\n" + referenceEnd)
	return b.String()
}

// TestConfigReference: every setting in config.hcl and in docs/configuration.md's table.
func TestConfigReference(t *testing.T) {
	entries := configHCLEntries(t)
	for _, name := range schemaSettings() {
		e, ok := entries[name]
		block, attr := name[:strings.LastIndex(name, ".")], name[strings.LastIndex(name, ".")+1:]
		switch {
		case !ok:
			t.Errorf("setting %s is not in config.hcl: add `%s = <its default>` inside its `%s { }` block, with a comment line above it that says what it is for", name, attr, block)
		case e.commented && !strings.HasPrefix(name, "listener."):
			t.Errorf("setting %s is only commented out in config.hcl: write `%s = <its default>` uncommented in its `%s { }` block, so that the test of config.hcl against Default() checks its default", name, attr, block)
		case e.why == "":
			t.Errorf("setting %s has no comment in config.hcl: add one line above `%s = ...` that says what it is for", name, attr)
		}
	}
	if t.Failed() {
		return // the table is made from config.hcl: fix it first
	}

	doc, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i, j := strings.Index(text, referenceBegin), strings.Index(text, referenceEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no generated settings table (the lines %q ... %q)", referencePath, referenceBegin, referenceEnd)
	}
	want := referenceTable(t)
	got := text[i : j+len(referenceEnd)]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(referencePath, []byte(text[:i]+want+text[j+len(referenceEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the settings table of %s", referencePath)
		return
	}
	gotRows, wantRows := strings.Split(got, "\n"), strings.Split(want, "\n")
	var diff []string
	for _, r := range wantRows {
		if !slices.Contains(gotRows, r) {
			diff = append(diff, "  missing or different: "+r)
		}
	}
	for _, r := range gotRows {
		if !slices.Contains(wantRows, r) {
			diff = append(diff, "  no longer true:       "+r)
		}
	}
	t.Errorf("the settings table of docs/configuration.md is out of date with config.hcl and package config:\n%s\nrun: go test ./config -run TestConfigReference -update (then read the diff)",
		strings.Join(diff, "\n"))
}

// TestFlagsReference: every flag is in docs/configuration.md's flags table with the
// default that -h prints.
func TestFlagsReference(t *testing.T) {
	var help bytes.Buffer
	if _, err := Parse([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	doc, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`^  -([a-z-]+)`)
	defaultOf := regexp.MustCompile(`\(default ([^):]+)[):]`)
	lines := strings.Split(help.String(), "\n")
	n := 0
	for k, l := range lines {
		m := flagLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n++
		name := m[1]
		usage := ""
		for _, u := range lines[k+1:] {
			if !strings.HasPrefix(u, "    \t") {
				break
			}
			usage += strings.TrimPrefix(u, "    \t") + " "
		}
		var row string
		for _, r := range strings.Split(string(doc), "\n") {
			if strings.HasPrefix(r, "| `-"+name+"`") || strings.HasPrefix(r, "| `-"+name+" ") {
				row = r
				break
			}
		}
		if row == "" {
			t.Errorf("flag -%s is not in the flags table of docs/configuration.md: add a row | `-%s ...` | what it does (its default) |", name, name)
			continue
		}
		if d := defaultOf.FindStringSubmatch(usage); d != nil && !strings.Contains(row, "("+strings.TrimSpace(d[1])) {
			t.Errorf("flag -%s: -h says its default is %s, its row in docs/configuration.md does not end its meaning with (%s):\n%s", name, d[1], d[1], row)
		}
	}
	if n < 10 {
		t.Fatalf("found only %d flags in -h:\n%s", n, help.String())
	}
}
