package drain

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

func testLogger(buf *testlog.Buffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug})
}

func TestGroupRecoversAndLogsPanics(t *testing.T) {
	var buf testlog.Buffer
	g := NewGroup(testLogger(&buf))
	ran := make(chan struct{})
	g.Go("exploding", func(context.Context) { panic("boom") })
	g.Go("fine", func(context.Context) { close(ran) })
	<-ran
	if unfinished := g.Wait(5 * time.Second); unfinished != nil {
		t.Fatalf("unfinished %v, want none", unfinished)
	}
	if g.Panics() != 1 {
		t.Fatalf("Panics() = %d, want 1", g.Panics())
	}
	out := buf.String()
	for _, want := range []string{"background worker panicked", "worker=exploding", "panic=boom", "group_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestGroupWaitCancelsWorkersAndNamesStragglers(t *testing.T) {
	g := NewGroup(hclog.NewNullLogger())
	release := make(chan struct{})
	defer close(release)
	g.Go("flusher", func(ctx context.Context) { <-ctx.Done() }) // finishes when told to
	g.Go("stuck", func(context.Context) { <-release })          // ignores its context
	g.Go("stuck", func(context.Context) { <-release })
	g.Go("also-stuck", func(context.Context) { <-release })
	got := g.Wait(50 * time.Millisecond)
	if want := []string{"also-stuck", "stuck"}; !slices.Equal(got, want) {
		t.Fatalf("unfinished = %v, want %v", got, want)
	}
}
