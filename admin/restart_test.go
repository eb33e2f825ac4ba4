package admin

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/drainproxy/drainproxy/drain"
)

type restartDrainer struct{ phase atomic.Int32 }

func (d *restartDrainer) Stats() drain.Stats { return drain.Stats{Phase: drain.Phase(d.phase.Load())} }
func (d *restartDrainer) Drain(string)       { d.phase.Store(int32(drain.PhaseDraining)) }

type restartApp struct {
	calls atomic.Int32
	err   error
}

func (a *restartApp) Restart(reason string) error {
	a.calls.Add(1)
	return a.err
}

func restartPost(t *testing.T, srv *Server, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+srv.Addr()+"/restart", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// POST /restart: the token as for /drain; 202 when the app restarts, 409 when there is no
// supervised app or it refuses (already restarting), 503 once a drain has begun.
func TestRestartEndpoint(t *testing.T) {
	const token = "secret-token"
	d := &restartDrainer{}
	d.phase.Store(int32(drain.PhaseReady))
	app := &restartApp{}
	start := func(r Restarter) *Server {
		srv, err := Start(Options{Address: "127.0.0.1:0", Token: token, Drainer: d, Restarter: r})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		return srv
	}
	srv := start(app)

	if code, _ := restartPost(t, srv, ""); code != http.StatusUnauthorized || app.calls.Load() != 0 {
		t.Fatalf("without the token: %d, %d restarts; want 401 and none", code, app.calls.Load())
	}
	if code, body := restartPost(t, srv, token); code != http.StatusAccepted || app.calls.Load() != 1 {
		t.Fatalf("POST /restart = %d %q, %d restarts; want 202 and one", code, body, app.calls.Load())
	}
	app.err = errors.New("an app restart is already in progress")
	if code, body := restartPost(t, srv, token); code != http.StatusConflict || !strings.Contains(body, "already in progress") {
		t.Fatalf("while restarting: %d %q, want 409 saying why", code, body)
	}
	if code, body := restartPost(t, start(nil), token); code != http.StatusConflict || !strings.Contains(body, "no app is supervised") {
		t.Fatalf("without a supervised app: %d %q, want 409", code, body)
	}
	d.Drain("test")
	calls := app.calls.Load()
	if code, _ := restartPost(t, srv, token); code != http.StatusServiceUnavailable || app.calls.Load() != calls {
		t.Fatalf("while draining: %d (restart called: %v), want 503 without a restart", code, app.calls.Load() != calls)
	}
}
