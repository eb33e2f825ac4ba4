package drain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// The summary counts the requests drainproxy answered for the app after the drain began
// (502/503/504 with an upstream error), and only those; they leave the exit code at 0.
func TestSummaryCountsUpstreamFailures(t *testing.T) {
	d := New(Options{})
	inside, release := make(chan struct{}, 8), make(chan struct{})
	addr, done := serve(t, d, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-release
		var status int
		fmt.Sscan(r.URL.Query().Get("status"), &status)
		if reason := r.URL.Query().Get("reason"); reason != "" {
			w.(interface {
				RecordUpstreamError(string, int, error)
			}).RecordUpstreamError(reason, status, errors.New("upstream gone"))
		}
		w.WriteHeader(status)
	}))
	waitUntil(t, d.Ready)
	// Before the drain: not counted.
	before := make(chan struct{})
	go func() {
		defer close(before)
		if resp, err := http.Get("http://" + addr + "/?status=502&reason=refused"); err == nil {
			resp.Body.Close()
		}
	}()
	<-inside
	release <- struct{}{}
	<-before

	requests := []string{
		"status=502&reason=refused", "status=502&reason=reset", "status=504&reason=timeout",
		"status=503&reason=app_not_running",
		"status=503",                       // the app's own 503
		"status=200",                       // a success
		"status=413&reason=body_too_large", // not an upstream failure
	}
	var wg sync.WaitGroup
	for _, q := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := http.Get("http://" + addr + "/?" + q); err == nil {
				resp.Body.Close()
			}
		}()
		<-inside
	}
	d.Drain("test")
	close(release)
	wg.Wait()
	sum := <-done
	if sum.UpstreamFailed != 4 || sum.Drained != int64(len(requests)) {
		t.Errorf("summary %+v: want upstream_failed 4 of %d drained", sum, len(requests))
	}
	if sum.ExitCode() != 0 {
		t.Errorf("exit code %d; want 0: the drain lost nothing, the app failed", sum.ExitCode())
	}
	if st := d.Stats(); st.UpstreamFailed != 4 {
		t.Errorf("stats %+v: want UpstreamFailed 4", st)
	}
}

// unservedListener stands for a listener.Listener whose stop reset two connections.
type unservedListener struct{ net.Listener }

func (l unservedListener) StopAccepting(context.Context) (int, error) { return 0, l.Close() }
func (l unservedListener) Unserved() int64                            { return 2 }
func (l unservedListener) StopMethod() (string, string) {
	return "shutdown", "setsockopt SO_ATTACH_FILTER: operation not permitted"
}

// Connections a listener closed without serving are counted in the summary, the stats
// and a warning, name the method in an info line, and make the drain unclean.
func TestSummaryCountsUnservedConnections(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	log := hclog.New(&hclog.LoggerOptions{Output: lockedWriter{&mu, &logs}, JSONFormat: true})
	d := New(Options{Logger: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Add("public", testServer(d.Handler(http.NotFoundHandler())), unservedListener{ln})
	d.Drain("test")
	sum := d.Run(context.Background())
	if sum.Unserved != 2 || sum.ExitCode() != 1 {
		t.Errorf("summary %+v, exit code %d: want unserved 2 and exit code 1", sum, sum.ExitCode())
	}
	if st := d.Stats(); st.Unserved != 2 {
		t.Errorf("stats %+v: want Unserved 2", st)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	for _, want := range []string{`"method":"shutdown"`, `"@message":"listener stopped"`, `"unserved":2`, `"@level":"warn"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
