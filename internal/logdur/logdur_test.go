package logdur

import (
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		250391 * time.Nanosecond:            "250µs",
		8038268 * time.Nanosecond:           "8.038ms",
		5001660325 * time.Nanosecond:        "5.002s",
		30*time.Second + 123456:             "30s",
		0:                                   "0s",
		90*time.Second + 4*time.Millisecond: "1m30.004s",
	} {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", int64(d), got, want)
		}
	}
}
