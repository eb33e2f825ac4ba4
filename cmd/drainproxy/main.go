// Command drainproxy is a reverse-proxy sidecar that gives any HTTP app a graceful drain.
// See the README for flags, configuration, signals and exit codes.
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
