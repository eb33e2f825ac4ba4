package tlsfront

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ZapLogger returns a zap logger whose entries go to log: certmagic and acmez log through
// zap, and this keeps their lines in drainproxy's one log stream, in its format. Levels
// map one to one (zap's error and above to hclog's error); fields become key/value pairs;
// a zap logger name is appended to log's name.
func ZapLogger(log hclog.Logger) *zap.Logger {
	return zap.New(&hclogCore{log: log})
}

// hclogCore is a zapcore.Core that writes to an hclog.Logger.
type hclogCore struct {
	log    hclog.Logger
	fields []zapcore.Field // from With, written before the entry's own
}

func (c *hclogCore) Enabled(l zapcore.Level) bool {
	return c.log.GetLevel() <= hclogLevel(l)
}

func (c *hclogCore) With(fields []zapcore.Field) zapcore.Core {
	return &hclogCore{log: c.log, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *hclogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *hclogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	args := make([]any, 0, 2*(len(c.fields)+len(fields)))
	for _, fs := range [][]zapcore.Field{c.fields, fields} {
		for _, f := range fs {
			f.AddTo(enc)
			// Keep the fields in the order they were given: MapObjectEncoder is a map.
			if v, ok := enc.Fields[f.Key]; ok {
				args = append(args, f.Key, plainValue(v))
				delete(enc.Fields, f.Key)
			}
		}
	}
	// What a field added under another key (zap.Error's "errorVerbose"), sorted.
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		args = append(args, k, plainValue(enc.Fields[k]))
	}
	log := c.log
	if name := strings.Trim(e.LoggerName, "."); name != "" {
		log = log.Named(strings.ReplaceAll(name, "..", "."))
	}
	log.Log(hclogLevel(e.Level), e.Message, args...)
	return nil
}

func (c *hclogCore) Sync() error { return nil }

func hclogLevel(l zapcore.Level) hclog.Level {
	switch {
	case l < zapcore.InfoLevel:
		return hclog.Debug
	case l == zapcore.InfoLevel:
		return hclog.Info
	case l == zapcore.WarnLevel:
		return hclog.Warn
	}
	return hclog.Error
}

// plainValue turns what zap's map encoder stores into what reads well in text and JSON
// logs alike: durations and times as strings, not integers.
func plainValue(v any) any {
	switch v := v.(type) {
	case time.Duration:
		return v.String()
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	}
	return v
}
