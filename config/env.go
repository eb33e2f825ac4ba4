package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// The environment is the third source of settings, between the file and the flags, so
// that compose's environment: and Kubernetes' env: can configure drainproxy without a
// file. One rule names every variable: DRAINPROXY_, then the setting's name in the file
// with the block and the setting joined by "_", upper-cased:
//
//	upstream.url          DRAINPROXY_UPSTREAM_URL
//	drain.grace           DRAINPROXY_DRAIN_GRACE
//	limits.max_connections DRAINPROXY_LIMITS_MAX_CONNECTIONS
//	listener.address      DRAINPROXY_LISTENER_ADDRESS (comma-separated; replaces the file's listeners, as -listen does)
//
// and DRAINPROXY_CONFIG is the -config flag's FILE. A list setting takes an HCL list
// (["a", "b"]) or a comma-separated one. An empty variable counts as unset. Settings
// inside listener blocks (tls, redirects, h2c) exist only in the file, since a file may
// hold several listeners.

// EnvPrefix starts the name of every environment variable drainproxy reads as a setting.
const EnvPrefix = "DRAINPROXY_"

// EnvConfigFile names the config file when -config is not given.
const EnvConfigFile = EnvPrefix + "CONFIG"

// envListeners is listener.address, the one setting of the listener blocks that the
// environment can give.
const envListeners = EnvPrefix + "LISTENER_ADDRESS"

// EnvSetting is one setting the environment can give.
type EnvSetting struct {
	Var     string // DRAINPROXY_DRAIN_GRACE
	Setting string // drain.grace
	list    bool
}

// EnvSettings lists every setting the environment can give, sorted by variable name.
func EnvSettings() []EnvSetting {
	out := []EnvSetting{{Var: envListeners, Setting: "listener.address", list: true}}
	t := reflect.TypeFor[fileConfig]()
	for i := range t.NumField() {
		block, kind, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		bt := t.Field(i).Type
		if kind != "block" || bt.Kind() != reflect.Pointer {
			continue // listener blocks repeat: only their address, above
		}
		bt = bt.Elem()
		for j := range bt.NumField() {
			attr, kind, _ := strings.Cut(bt.Field(j).Tag.Get("hcl"), ",")
			if attr == "" || kind == "block" {
				continue
			}
			ft := bt.Field(j).Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			out = append(out, EnvSetting{
				Var:     EnvVarName(block + "." + attr),
				Setting: block + "." + attr,
				list:    ft.Kind() == reflect.Slice,
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Var < out[j].Var })
	return out
}

// EnvVarName is the environment variable of the setting "block.attr".
func EnvVarName(setting string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(setting))
}

// loadEnv applies the settings that getenv has over cfg, each as if it were the only
// setting of a file, so that it is parsed and validated exactly as the file's would be.
// It reports every problem at once, each naming its variable.
func loadEnv(getenv func(string) string, cfg *Config) error {
	var all []string
	for _, s := range EnvSettings() {
		v := getenv(s.Var)
		if v == "" {
			continue
		}
		block, attr, _ := strings.Cut(s.Setting, ".")
		var src strings.Builder
		if s.Var == envListeners {
			for _, a := range strings.Split(v, ",") {
				fmt.Fprintf(&src, "listener {\n address = %s\n}\n", hclString(strings.TrimSpace(a)))
			}
		} else {
			fmt.Fprintf(&src, "%s {\n %s = %s\n}\n", block, attr, envValue(v, s.list))
		}
		if err := loadFile([]byte(src.String()), "$"+s.Var, cfg); err != nil {
			all = append(all, err.Error())
		}
	}
	if len(all) > 0 {
		return fmt.Errorf("%s", strings.Join(all, "\n"))
	}
	return nil
}

// envValue is v as an HCL expression: a string, or for a list setting v itself when it
// is written as a list, else its comma-separated items.
func envValue(v string, list bool) string {
	if !list {
		return hclString(v)
	}
	if t := strings.TrimSpace(v); strings.HasPrefix(t, "[") {
		return t
	}
	items := strings.Split(v, ",")
	for i, it := range items {
		items[i] = hclString(strings.TrimSpace(it))
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// hclString quotes s as an HCL string literal, escaping template sequences, so that the
// value arrives as written. Numbers and bools convert from it as the file's would.
func hclString(s string) string {
	return string(hclwrite.TokensForValue(cty.StringVal(s)).Bytes())
}
