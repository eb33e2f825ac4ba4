// Package testenv decides what a test does when the machine lacks something it needs
// (root, network namespaces, a Docker engine, a program from Debian's packages).
//
// On a developer's machine such a test skips with a message that says what is missing and
// how to get it. In CI (CI=true, as .ci/run runs) the same test fails instead: our CI has
// root, namespaces and Docker, so a skip there would hide a test that never ran.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether missing prerequisites must fail the test rather than skip it.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Unavailable skips t (or, in CI, fails it) with a message saying why it cannot run here.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing in CI (which must have it): "+format, args...)
	}
	t.Skipf(format, args...)
}

// NeedRoot calls Unavailable unless the test runs as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (%s); run the suite as root, as .ci/run does", why)
	}
}

// NeedProgram returns the path of prog, or calls Unavailable naming the Debian package
// that provides it.
func NeedProgram(t testing.TB, prog, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		Unavailable(t, "%s is not installed (apt-get install -y %s; .ci/run does it)", prog, debianPackage)
	}
	return p
}

// NeedDocker calls Unavailable unless a Docker engine answers.
func NeedDocker(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		Unavailable(t, "no docker client on PATH: these tests run real containers")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		Unavailable(t, "no Docker engine answers (docker info: %v: %s): these tests run real containers", err, out)
	}
}
