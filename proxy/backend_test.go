package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/proxy"
)

// switchUpstream answers every request with its name; /hold blocks until release is
// closed, after announcing itself on held.
func switchUpstream(t *testing.T, name string) (u *url.URL, held <-chan struct{}, release func()) {
	t.Helper()
	heldCh, releaseCh := make(chan struct{}, 16), make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		heldCh <- struct{}{}
		select {
		case <-releaseCh:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, name)
	})
	release = func() { once.Do(func() { close(releaseCh) }) }
	t.Cleanup(release)
	return upstreamURL(t, mux), heldCh, release
}

func switchGet(t *testing.T, f *front, path string) (string, error) {
	t.Helper()
	resp, err := f.Client.Get(f.URL + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	return string(b), err
}

// New requests go to the new upstream at once; a request in flight on the old one
// finishes there, and the old backend's Wait returns when it has, not before.
func TestSwitchWaitsForRequestsInFlight(t *testing.T) {
	bothWays(t, func(t *testing.T, viaDrain bool) {
		a, held, release := switchUpstream(t, "a")
		b, _, _ := switchUpstream(t, "b")
		f := startFront(t, proxy.Options{Upstream: a}, viaDrain)

		if got, err := switchGet(t, f, "/"); got != "a" || err != nil {
			t.Fatalf("before the switch: %q %v, want a", got, err)
		}
		slow := make(chan string, 1)
		go func() {
			got, err := switchGet(t, f, "/hold")
			if err != nil {
				got = err.Error()
			}
			slow <- got
		}()
		<-held

		old, err := f.Proxy.Switch(b)
		if err != nil {
			t.Fatal(err)
		}
		if old.Upstream() != a.String() || f.Proxy.Upstream() != b.String() {
			t.Fatalf("old %s, current %s; want %s and %s", old.Upstream(), f.Proxy.Upstream(), a, b)
		}
		if got, err := switchGet(t, f, "/"); got != "b" || err != nil {
			t.Fatalf("after the switch: %q %v, want b", got, err)
		}
		if n := old.Inflight(); n != 1 {
			t.Fatalf("old backend has %d requests in flight, want 1", n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err = old.Wait(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 requests still in flight") {
			t.Fatalf("Wait with a request in flight: %v, want a deadline error naming 1 request", err)
		}

		waited := make(chan error, 1)
		go func() { waited <- old.Wait(context.Background()) }()
		select {
		case err := <-waited:
			t.Fatalf("Wait returned (%v) while the request was still in flight", err)
		case <-time.After(20 * time.Millisecond):
		}
		release()
		if got := <-slow; got != "a" {
			t.Fatalf("the request in flight at the switch got %q, want a's answer", got)
		}
		select {
		case err := <-waited:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return after the last request finished")
		}
		old.Close()
	})
}

// A backend replaced while idle is done at once.
func TestSwitchIdleBackendWaitReturnsAtOnce(t *testing.T) {
	a, _, _ := switchUpstream(t, "a")
	b, _, _ := switchUpstream(t, "b")
	f := startFront(t, proxy.Options{Upstream: a}, false)
	old, err := f.Proxy.Switch(b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := old.Wait(ctx); err != nil {
		t.Fatalf("Wait on an idle replaced backend: %v", err)
	}
}

// An upstream the proxy cannot use is refused and the current one stays.
func TestSwitchRefusesBadUpstream(t *testing.T) {
	a, _, _ := switchUpstream(t, "a")
	f := startFront(t, proxy.Options{Upstream: a}, false)
	if _, err := f.Proxy.Switch(&url.URL{Scheme: "ftp", Host: "127.0.0.1:21"}); err == nil {
		t.Fatal("Switch to ftp:// succeeded")
	}
	if _, err := f.Proxy.Switch(nil); err == nil {
		t.Fatal("Switch to nil succeeded")
	}
	if got, err := switchGet(t, f, "/"); got != "a" || err != nil {
		t.Fatalf("after refused switches: %q %v, want a", got, err)
	}
}

// Switching back and forth under concurrent requests: every request is answered 200 by
// one of the upstreams, and every replaced backend's Wait returns (run with -race: the
// count-then-check in the request path against retire in Switch).
func TestSwitchUnderConcurrentRequests(t *testing.T) {
	a, _, _ := switchUpstream(t, "a")
	b, _, _ := switchUpstream(t, "b")
	f := startFront(t, proxy.Options{Upstream: a}, true)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 { // bounded; stop ends it sooner
				select {
				case <-stop:
					return
				default:
				}
				got, err := switchGet(t, f, "/")
				if err == nil && got != "a" && got != "b" {
					err = errors.New("unexpected body " + got)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 100 {
		next := a
		if i%2 == 0 {
			next = b
		}
		old, err := f.Proxy.Switch(next)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = old.Wait(ctx)
		cancel()
		if err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		old.Close()
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
