package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// A skip shows in the summary with its reason; a failing package shows its whole output
// and makes the exit code 1; a passing one shows only its ok line.
func TestReport(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p/a","Test":"TestACME"}`,
		`{"Action":"output","Package":"p/a","Test":"TestACME","Output":"=== RUN   TestACME\n"}`,
		`{"Action":"output","Package":"p/a","Test":"TestACME","Output":"    tls_e2e_test.go:183: pebble is not installed (apt-get install -y pebble; .ci/run does it)\n"}`,
		`{"Action":"output","Package":"p/a","Test":"TestACME","Output":"--- SKIP: TestACME (0.00s)\n"}`,
		`{"Action":"skip","Package":"p/a","Test":"TestACME"}`,
		`{"Action":"output","Package":"p/a","Test":"TestOK","Output":"chatter\n"}`,
		`{"Action":"pass","Package":"p/a","Test":"TestOK"}`,
		`{"Action":"output","Package":"p/a","Output":"PASS\n"}`,
		`{"Action":"output","Package":"p/a","Output":"ok  \tp/a\t0.1s\n"}`,
		`{"Action":"pass","Package":"p/a"}`,
		`{"Action":"output","Package":"p/b","Test":"TestBad","Output":"    b_test.go:9: broken\n"}`,
		`{"Action":"fail","Package":"p/b","Test":"TestBad"}`,
		`{"Action":"output","Package":"p/b","Output":"FAIL\tp/b\t0.2s\n"}`,
		`{"Action":"fail","Package":"p/b"}`,
	}, "\n")
	var out bytes.Buffer
	code := report(strings.NewReader(in), &out)
	want := "ok  \tp/a\t0.1s\n" +
		"    skipped TestACME: pebble is not installed (apt-get install -y pebble; .ci/run does it)\n" +
		"    b_test.go:9: broken\nFAIL\tp/b\t0.2s\n"
	if out.String() != want || code != 1 {
		t.Errorf("report = %d\n%s\nwant 1\n%s", code, out.String(), want)
	}
}

// The README's test command is the one .ci/run runs (issue 24 item 10).
func TestReadmeRunsWhatCIRuns(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^scripts/test\b`).Match(readme) {
		t.Errorf("README.md does not give the test command as a line starting with scripts/test")
	}
	if !regexp.MustCompile(`(?m)^scripts/test\s*$`).Match(ci) {
		t.Errorf(".ci/run does not run scripts/test")
	}
	script, err := os.ReadFile("../../scripts/test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "go test -race -count=1 -timeout 30m -json") {
		t.Errorf("scripts/test no longer runs go test -race -count=1 -timeout 30m -json")
	}
}
