// Package logdur formats the durations that log lines carry ("took", "ran", "grace"), so
// that every line rounds them the same way: to the microsecond below a second (a drain
// step can take 250µs, and that is worth seeing), to the millisecond from a second on
// (nobody reads 30.000123456s). Go's duration syntax, so time.ParseDuration reads it back.
package logdur

import "time"

// Format is d rounded as the package comment says, as a Go duration string.
func Format(d time.Duration) string {
	if d < time.Second && d > -time.Second {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// Since is Format(time.Since(t)).
func Since(t time.Time) string { return Format(time.Since(t)) }
