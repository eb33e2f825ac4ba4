package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/drainproxy/drainproxy/admin/adminclient"
)

// The subcommands exist for images without a shell: a FROM scratch image has no curl for
// its health check and no cp to hand the binary to another container.
//
//	drainproxy probe [-timeout 2s] URL   GET URL: exit 0 on a 2xx answer, 1 otherwise
//	drainproxy install DEST              copy this executable to DEST (a file or a directory)
//	drainproxy drain [-wait] ...         start the drain of a running drainproxy (package adminclient)
//	drainproxy status [-watch] [-json]   what a running drainproxy does and waits for (package adminclient)
func subcommand(ctx context.Context, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case "probe":
		return adminclient.Probe(ctx, args[1:], stderr), true
	case "install":
		return install(args[1:], stdout, stderr), true
	case "drain":
		return adminclient.Drain(ctx, args[1:], stdout, stderr), true
	case "status":
		return adminclient.Status(ctx, args[1:], stdout, stderr), true
	}
	return 0, false
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
