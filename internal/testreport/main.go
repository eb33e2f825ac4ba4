// Command testreport reads `go test -json` and prints what `go test` prints without -v,
// plus, under each package, one line per test that skipped and why. Without it a skip
// (no Docker, no pebble, not root) is invisible unless the suite runs with -v, so a
// prerequisite that is missing looks like a pass. scripts/test runs it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output
}

type pkgState struct {
	output []string            // every line, as go test -v would print it
	tests  map[string][]string // each test's own lines
	skips  []string            // "TestX: why"
}

func main() {
	os.Exit(report(os.Stdin, os.Stdout))
}

// report copies the summary of the events on in to out and returns 1 if a package failed.
func report(in io.Reader, out io.Writer) int {
	pkgs := map[string]*pkgState{}
	state := func(p string) *pkgState {
		s := pkgs[p]
		if s == nil {
			s = &pkgState{tests: map[string][]string{}}
			pkgs[p] = s
		}
		return s
	}
	code := 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(out, sc.Text()) // not an event: pass it on
			continue
		}
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			code = 1
		case "output":
			s := state(e.Package)
			s.output = append(s.output, e.Output)
			if e.Test != "" {
				s.tests[e.Test] = append(s.tests[e.Test], e.Output)
			}
		case "skip":
			s := state(e.Package)
			if e.Test != "" {
				s.skips = append(s.skips, e.Test+": "+skipReason(s.tests[e.Test]))
				continue
			}
			printSummary(out, s)
		case "pass":
			if e.Test == "" {
				printSummary(out, state(e.Package))
			}
		case "fail":
			if e.Test == "" {
				code = 1
				for _, l := range state(e.Package).output {
					fmt.Fprint(out, l)
				}
			}
		}
	}
	return code
}

// printSummary prints a passing package's "ok" line, then its skips.
func printSummary(out io.Writer, s *pkgState) {
	for _, l := range s.output {
		if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "ok\t") || strings.HasPrefix(l, "?") {
			fmt.Fprint(out, l)
		}
	}
	for _, sk := range s.skips {
		fmt.Fprintf(out, "    skipped %s\n", sk)
	}
}

// skipReason is the message a test gave t.Skip: its last line of output before
// "--- SKIP", without the file:line prefix.
func skipReason(lines []string) string {
	reason := "(no reason given)"
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "--- SKIP") || strings.HasPrefix(t, "=== ") {
			continue
		}
		if _, msg, ok := strings.Cut(t, ": "); ok && strings.Contains(t[:len(t)-len(msg)], ".go:") {
			t = msg
		}
		reason = t
	}
	return reason
}
