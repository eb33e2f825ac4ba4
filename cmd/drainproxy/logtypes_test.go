package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// keyTypes records, for every key of the JSON log lines seen, the JSON types its values
// had, with an example line for each: operators parse these lines, and a key that is a
// number on one line and a string on the next breaks their queries.
type keyTypes struct {
	mu    sync.Mutex
	types map[string]map[string]string // key -> JSON type -> an example line's message and value
}

// logKeyTypes collects the keys of every drainproxy process the e2e tests start;
// TestMain fails the run when one has two types.
var logKeyTypes keyTypes

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	default:
		return "object"
	}
}

func (k *keyTypes) record(line map[string]any) {
	if m, _ := line["@module"].(string); strings.Contains(m, ".certmagic") {
		// certmagic's and acmez's own lines (through tlsfront's zap bridge) carry their
		// fields as those libraries type them (a string "status", say); the README says so.
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.types == nil {
		k.types = make(map[string]map[string]string)
	}
	for key, v := range line {
		typ := jsonType(v)
		if k.types[key] == nil {
			k.types[key] = make(map[string]string)
		}
		if _, ok := k.types[key][typ]; !ok {
			k.types[key][typ] = fmt.Sprintf("%q in %q", fmt.Sprint(v), fmt.Sprint(line["@message"]))
		}
	}
}

// conflicts lists each key seen with more than one type, one per line ("" when none).
func (k *keyTypes) conflicts() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for key, types := range k.types {
		if len(types) < 2 {
			continue
		}
		var seen []string
		for typ, example := range types {
			seen = append(seen, typ+" (e.g. "+example+")")
		}
		sort.Strings(seen)
		out = append(out, fmt.Sprintf("  %s: %s\n", key, strings.Join(seen, "; ")))
	}
	sort.Strings(out)
	return strings.Join(out, "")
}
