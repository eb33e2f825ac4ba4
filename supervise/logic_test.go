package supervise

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCopyLines(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	tests := []struct {
		name, in, prefix, want string
	}{
		{"empty", "", "app| ", ""},
		{"lines", "a\nb\n", "app| ", "app| a\napp| b\n"},
		{"last partial line kept", "a\nb", "app| ", "app| a\napp| b\n"},
		{"no prefix", "a\nb", "", "a\nb\n"},
		{"empty lines", "\n\n", "> ", "> \n> \n"},
		{"long line prefixed once", long + "\nz\n", "> ", "> " + long + "\n> z\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			copyLines(&out, strings.NewReader(tt.in), tt.prefix)
			if got := out.String(); got != tt.want {
				t.Errorf("copyLines(%.40q, %q) = %.80q, want %.80q", tt.in, tt.prefix, got, tt.want)
			}
		})
	}
}

// Every line reaches the destination in one Write, so lines never interleave with other
// writers.
func TestCopyLinesWritesWholeLines(t *testing.T) {
	var w writeRecorder
	copyLines(&w, strings.NewReader("one\ntwo\nthree"), "p ")
	want := []string{"p one\n", "p two\n", "p three\n"}
	if strings.Join(w.writes, "|") != strings.Join(want, "|") {
		t.Fatalf("writes %q, want %q", w.writes, want)
	}
}

type writeRecorder struct{ writes []string }

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestRestartBudget(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Unix(1000, 0)
	type step struct {
		at       time.Duration // since t0
		ran      time.Duration
		wantWait time.Duration
		wantOK   bool
	}
	tests := []struct {
		name  string
		limit int
		steps []step
	}{
		{"doubles up to max", 10, []step{
			{0, 0, 100 * ms, true}, {ms, 0, 200 * ms, true}, {2 * ms, 0, 400 * ms, true},
			{3 * ms, 0, 800 * ms, true}, {4 * ms, 0, 1000 * ms, true}, {5 * ms, 0, 1000 * ms, true},
		}},
		{"limit within the window", 2, []step{
			{0, 0, 100 * ms, true}, {ms, 0, 200 * ms, true}, {2 * ms, 0, 0, false},
		}},
		{"old restarts leave the window", 2, []step{
			{0, 0, 100 * ms, true}, {ms, 0, 200 * ms, true}, {61 * time.Second, 0, 400 * ms, true},
		}},
		{"a long run resets the backoff", 10, []step{
			{0, 0, 100 * ms, true}, {ms, 0, 200 * ms, true}, {time.Minute, time.Second, 100 * ms, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newRestartBudget(100*ms, time.Second, tt.limit, time.Minute)
			for i, s := range tt.steps {
				wait, ok := b.take(t0.Add(s.at), s.ran)
				if wait != s.wantWait || ok != s.wantOK {
					t.Fatalf("step %d: take = %v, %v; want %v, %v", i, wait, ok, s.wantWait, s.wantOK)
				}
			}
		})
	}
}

func TestRestartWants(t *testing.T) {
	crash, clean, killed := Exit{Code: 2}, Exit{}, Exit{Code: -1, Signal: syscall.SIGKILL}
	tests := []struct {
		policy Restart
		exit   Exit
		want   bool
	}{
		{RestartNever, crash, false},
		{RestartOnFailure, crash, true},
		{RestartOnFailure, killed, true},
		{RestartOnFailure, clean, false},
		{RestartAlways, clean, true},
	}
	for _, tt := range tests {
		if got := tt.policy.wants(tt.exit); got != tt.want {
			t.Errorf("%s.wants(%s) = %v, want %v", tt.policy, tt.exit, got, tt.want)
		}
	}
}

func TestParseSignals(t *testing.T) {
	tests := []struct {
		parse   func(string) (syscall.Signal, error)
		in      string
		want    syscall.Signal
		wantErr string
	}{
		{ParseStopSignal, "SIGTERM", syscall.SIGTERM, ""},
		{ParseStopSignal, "quit", syscall.SIGQUIT, ""},
		{ParseStopSignal, "SIGSTOP", 0, `"SIGSTOP" is not allowed; write one of "SIGTERM"`},
		{ParseStopSignal, "TERMINATE", 0, "is not allowed"},
		{ParseForwardSignal, "SIGUSR2", syscall.SIGUSR2, ""},
		{ParseForwardSignal, "usr1", syscall.SIGUSR1, ""},
		{ParseForwardSignal, "SIGTERM", 0, `"SIGTERM" is not allowed; write one of "SIGUSR1"`},
		{ParseForwardSignal, "SIGHUP", 0, "is not allowed"},
	}
	for _, tt := range tests {
		got, err := tt.parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parse(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := ParseRestart("sometimes"); err == nil {
		t.Error("ParseRestart accepted \"sometimes\"")
	}
}

func TestExit(t *testing.T) {
	tests := []struct {
		e          Exit
		str        string
		shell      int
		successful bool
	}{
		{Exit{Code: 0}, "exit code 0", 0, true},
		{Exit{Code: 7}, "exit code 7", 7, false},
		{Exit{Code: -1, Signal: syscall.SIGTERM}, "killed by SIGTERM", 143, false},
		{Exit{Code: -1, Signal: syscall.SIGKILL}, "killed by SIGKILL", 137, false},
	}
	for _, tt := range tests {
		if tt.e.String() != tt.str || tt.e.ShellCode() != tt.shell || tt.e.Success() != tt.successful {
			t.Errorf("%+v: %q %d %v; want %q %d %v", tt.e, tt.e.String(), tt.e.ShellCode(), tt.e.Success(), tt.str, tt.shell, tt.successful)
		}
	}
}
