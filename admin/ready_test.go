package admin

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/drain"
)

type fakeApp struct{ reason atomic.Value }

func (a *fakeApp) NotServing() string { r, _ := a.reason.Load().(string); return r }

// In supervised mode readiness follows the app too: 503 with its reason while it is down,
// although the drain is ready and no health check has failed yet.
func TestReadyzFollowsTheApp(t *testing.T) {
	app := &fakeApp{}
	d := drain.New(drain.Options{Delay: time.Hour})
	srv, err := Start(Options{Address: "127.0.0.1:0", Drainer: d, App: app})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	f := &fixture{t: t, d: d, srv: srv}
	ran := make(chan drain.Summary, 1)
	go func() { ran <- d.Run(t.Context()) }()
	t.Cleanup(func() { d.Force("test over"); <-ran })
	f.waitReadyz(http.StatusOK, "ready\n")
	app.reason.Store("app not running (exited; restarting it by policy)")
	f.waitReadyz(http.StatusServiceUnavailable, "app not running (exited; restarting it by policy)\n")
	app.reason.Store("")
	f.waitReadyz(http.StatusOK, "ready\n")
}
