package instance

import (
	"strconv"

	"github.com/hashicorp/go-hclog"
)

// escapingLogger is the text-format logger with control characters in string values
// escaped (\n, \r, \x1b, ...): hclog's text format writes a value with a newline as
// several lines, so a client's %0A in a logged path could start what looks like a log
// line of its own. JSON lines and the access log escape on their own.
type escapingLogger struct{ hclog.Logger }

func (l escapingLogger) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, escapeControl(args)...)
}
func (l escapingLogger) Trace(msg string, args ...any) { l.Logger.Trace(msg, escapeControl(args)...) }
func (l escapingLogger) Debug(msg string, args ...any) { l.Logger.Debug(msg, escapeControl(args)...) }
func (l escapingLogger) Info(msg string, args ...any)  { l.Logger.Info(msg, escapeControl(args)...) }
func (l escapingLogger) Warn(msg string, args ...any)  { l.Logger.Warn(msg, escapeControl(args)...) }
func (l escapingLogger) Error(msg string, args ...any) { l.Logger.Error(msg, escapeControl(args)...) }
func (l escapingLogger) With(args ...any) hclog.Logger {
	return escapingLogger{l.Logger.With(escapeControl(args)...)}
}
func (l escapingLogger) Named(name string) hclog.Logger {
	return escapingLogger{l.Logger.Named(name)}
}
func (l escapingLogger) ResetNamed(name string) hclog.Logger {
	return escapingLogger{l.Logger.ResetNamed(name)}
}

// escapeControl returns args with every string value (and error) that holds a control
// character replaced by its Go-quoted form, without the quotes. It copies only when one
// does.
func escapeControl(args []any) []any {
	var out []any
	for i := 1; i < len(args); i += 2 {
		var s string
		switch v := args[i].(type) {
		case string:
			s = v
		case error:
			s = v.Error()
		default:
			continue
		}
		if !hasControl(s) {
			continue
		}
		if out == nil {
			out = append([]any(nil), args...)
		}
		q := strconv.Quote(s)
		out[i] = q[1 : len(q)-1]
	}
	if out == nil {
		return args
	}
	return out
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
