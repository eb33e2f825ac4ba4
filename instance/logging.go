package instance

import (
	"io"
	stdlog "log"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/config"
)

// RouteStdlog sends what libraries write with the standard log package through log (as
// JSON when the logs are JSON) at warning level, instead of as plain text into the log
// stream: net/http's Transport writes "Unsolicited response received on idle HTTP
// channel" there when an upstream sends bytes nobody asked for, and every http.Server
// without an ErrorLog writes there too. It returns what undoes it.
func RouteStdlog(log hclog.Logger) (undo func()) {
	out, flags, prefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	stdlog.SetOutput(log.Named("stdlog").StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}))
	stdlog.SetFlags(0) // hclog writes the time
	stdlog.SetPrefix("")
	return func() {
		stdlog.SetOutput(out)
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
	}
}

// NewLogger builds the root logger: text for a terminal, JSON for machines.
func NewLogger(c config.Log, w io.Writer) hclog.Logger {
	jsonFormat := c.Format == "json" || (c.Format == "auto" && !isTerminal(w))
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "drainproxy",
		Level:      hclog.LevelFromString(c.Level),
		Output:     w,
		JSONFormat: jsonFormat,
	})
	if !jsonFormat {
		return escapingLogger{log}
	}
	return log
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// WarnRenamed logs one warning for each setting cfg was given by its old name
// (config.Renamed), naming the new one.
func WarnRenamed(log hclog.Logger, cfg *config.Config) {
	for _, r := range cfg.Renamed {
		log.Warn("a setting was given by its old name, which still works for now: rename it",
			"setting", r.Old, "new_name", r.New, "at", r.Where)
	}
}
