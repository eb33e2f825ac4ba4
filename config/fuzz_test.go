package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParseFile feeds arbitrary bytes to the file loader. It must never panic, and when
// it refuses a file every line of the error must name the file.
func FuzzParseFile(f *testing.F) {
	if example, err := os.ReadFile("../config.hcl"); err == nil {
		f.Add(example)
	}
	for _, s := range []string{
		"",
		"upstream {\n  url = \"http://a:1\"\n}\n",
		"upstream \"x\" {\n  url = var.x\n  tls {}\n}\nupstream {}\n",
		"proxy {\n  trusted_proxies = [\"10.0.0.0/8\", 1, null]\n}\n",
		"limits {\n  max_request_body_bytes = 1e30\n  max_connections = 1.5\n}\n",
		"drain { grace = \"${1+1}s\" }",
		"x = 1\ny {}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg := Default()
		err := loadFile(src, "fuzz.hcl", cfg)
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "fuzz.hcl") {
				t.Errorf("error line does not name the file: %q", line)
			}
		}
	})
}
