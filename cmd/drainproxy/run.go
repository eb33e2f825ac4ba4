package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/instance"
)

// version and commit are set at build time (scripts/release, scripts/image) with
// -ldflags "-X main.version=v1.2.3 -X main.commit=0123abc". A binary built without them
// (go install ...@v1.2.3, go build) takes what the Go toolchain recorded instead.
var (
	version = "dev"
	commit  = ""
)

func init() { version, commit = buildVersion(version, commit, debug.ReadBuildInfo) }

// buildVersion fills in, from the build information the Go toolchain records, what
// -ldflags did not set: the module version (go install ...@v1.2.3) and the VCS revision
// (go build in a git checkout).
func buildVersion(version, commit string, read func() (*debug.BuildInfo, bool)) (string, string) {
	info, ok := read()
	if !ok {
		info = &debug.BuildInfo{}
	}
	if version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && commit == "" {
			commit = s.Value[:min(len(s.Value), 12)]
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return version, commit
}

// Exit codes; the README lists them.
const (
	exitOK      = 0 // clean drain
	exitFailure = 1 // runtime failure, or a drain that was forced or aborted something
	exitUsage   = 2 // bad flags or configuration
)

// run is the whole program; main only maps it to the process. Canceling ctx starts a
// drain, as SIGTERM does. getenv is the environment (see instance.Options); stdout
// carries the access log (by default), stderr the logs.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if code, ok := subcommand(ctx, args, stdout, stderr); ok { // probe, install, drain, status
		return code
	}
	cfg, err := config.ParseEnv(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy: %v\n", err)
		return exitUsage
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stderr, "drainproxy %s (commit %s)\n", version, commit)
		return exitOK
	}
	log := instance.NewLogger(cfg.Log, stderr)
	defer instance.RouteStdlog(log)()
	if cfg.CheckOnly {
		instance.WarnRenamed(log, cfg)
		log.Info("configuration is valid", "source", cfg.Source)
		return exitOK
	}
	inst, err := instance.New(cfg, instance.Options{Args: args, Getenv: getenv, Environ: os.Environ(),
		Stdout: stdout, Stderr: stderr, Logger: log, Version: version})
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		if errors.Is(err, instance.ErrConfig) {
			return exitUsage
		}
		return exitFailure
	}
	return inst.Run(ctx)
}
