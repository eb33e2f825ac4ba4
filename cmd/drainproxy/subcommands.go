package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The subcommands exist for images without a shell: a FROM scratch image has no curl for
// its health check and no cp to hand the binary to another container.
//
//	drainproxy probe [-timeout 2s] URL   GET URL: exit 0 on a 2xx answer, 1 otherwise
//	drainproxy install DEST              copy this executable to DEST (a file or a directory)
//	drainproxy drain [-wait] ...         start the drain of a running drainproxy (drain_cmd.go)
//	drainproxy status [-watch] [-json]   what a running drainproxy does and waits for (status_cmd.go)
func subcommand(ctx context.Context, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case "probe":
		return probe(ctx, args[1:], stderr), true
	case "install":
		return install(args[1:], stdout, stderr), true
	case "drain": // drain_cmd.go
		return drainCommand(ctx, args[1:], stdout, stderr), true
	case "status":
		return statusCommand(ctx, args[1:], stdout, stderr), true // status_cmd.go
	}
	return 0, false
}

// probe is a health check for compose, Docker's HEALTHCHECK and exec probes. It is quiet on
// success, as such checks should be, and says in one line on stderr why it failed.
func probe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("drainproxy probe", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after `DUR`")
	usage := "usage: drainproxy probe [-timeout 2s] URL   (e.g. http://127.0.0.1:9901/readyz)"
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "drainproxy probe: %v\n%s\n", err, usage)
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "drainproxy probe: want exactly one URL, got %d arguments\n%s\n", fs.NArg(), usage)
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "drainproxy probe: -timeout %s: must be more than 0\n", *timeout)
		return exitUsage
	}
	target := fs.Arg(0)
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "drainproxy probe: %q is not an http:// or https:// URL with a host\n%s\n", target, usage)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy probe: %v\n", err)
		return exitUsage
	}
	client := &http.Client{
		// A probe must see the endpoint's own answer, not where a redirect leads.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", *timeout)
		}
		fmt.Fprintf(stderr, "drainproxy probe: %s: %v\n", target, err)
		return exitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "drainproxy probe: %s: %s: %s\n", target, resp.Status, firstLine(body))
		return exitFailure
	}
	return exitOK
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return string(b[:i])
		}
	}
	return string(b)
}

// install copies the running executable to dest, so that an init container of the
// drainproxy image can put the binary into a volume shared with an app container whose
// image we cannot change. The copy is written beside dest and renamed over it, so a
// container that starts from dest never runs a half-written file.
func install(args []string, stdout, stderr io.Writer) int {
	usage := "usage: drainproxy install DEST   (a file path, or an existing directory)"
	if len(args) != 1 || args[0] == "" || args[0][0] == '-' {
		fmt.Fprintf(stderr, "drainproxy install: want exactly one destination\n%s\n", usage)
		return exitUsage
	}
	dest := args[0]
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		dest = filepath.Join(dest, "drainproxy")
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy install: cannot find this executable: %v\n", err)
		return exitFailure
	}
	if err := copyExecutable(self, dest); err != nil {
		fmt.Fprintf(stderr, "drainproxy install: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "drainproxy %s installed at %s\n", version, dest)
	return exitOK
}

func copyExecutable(src, dest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".drainproxy-install-*")
	if err != nil {
		return fmt.Errorf("cannot write to %s: %w (is the volume mounted and writable?)", filepath.Dir(dest), err)
	}
	defer os.Remove(tmp.Name()) // after the rename there is nothing left to remove
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copy to %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return fmt.Errorf("rename to %s: %w", dest, err)
	}
	return nil
}
