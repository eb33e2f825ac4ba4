package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Past the cap a request waits for a slot and gets one when a holder releases; with none
// freed in time it is refused (nil).
func TestOverloadQueuesThenRefuses(t *testing.T) {
	o := NewOverload(2, 200*time.Millisecond)
	a1 := o.acquire("a", nil, nil)
	a2 := o.acquire("a", nil, nil)
	if a1 == nil || a2 == nil {
		t.Fatal("no slot under the cap")
	}
	start := time.Now()
	if s := o.acquire("b", nil, nil); s != nil {
		t.Fatal("a slot past the cap")
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("refused after %s, want after the queue timeout (200ms)", waited)
	}
	if o.Rejected() != 1 {
		t.Errorf("Rejected = %d, want 1", o.Rejected())
	}
	got := make(chan *overloadSlot)
	go func() { got <- o.acquire("b", nil, nil) }()
	waitQueued(t, o, 1)
	a1.release()
	if s := <-got; s == nil {
		t.Fatal("the waiter got no slot when one was released")
	} else {
		s.release()
	}
	a2.release()
	if n, q := o.Inflight(); n != 0 || q != 0 {
		t.Errorf("Inflight = %d, %d after every release; want 0, 0", n, q)
	}
	o.mu.Lock()
	if len(o.conns) != 0 {
		t.Errorf("%d connection records left after every release", len(o.conns))
	}
	o.mu.Unlock()
}

// A freed slot goes to the waiter whose connection holds the fewest, not to the oldest
// waiter: a connection that holds many does not keep a light one queued behind it.
func TestOverloadGrantsTheLightestConnection(t *testing.T) {
	o := NewOverload(3, 5*time.Second)
	heavy := []*overloadSlot{o.acquire("heavy", nil, nil), o.acquire("heavy", nil, nil), o.acquire("heavy", nil, nil)}
	order := make(chan string, 2)
	var wg sync.WaitGroup
	for i, key := range []string{"heavy", "light"} { // heavy queues first
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := o.acquire(key, nil, nil)
			order <- key
			if s != nil {
				s.release()
			}
		}()
		waitQueued(t, o, i+1)
	}
	heavy[0].release()
	if first := <-order; first != "light" {
		t.Errorf("the freed slot went to %s's waiter, want light's (it holds none)", first)
	}
	heavy[1].release()
	heavy[2].release()
	wg.Wait()
}

// The queue holds at most as many requests as the cap: past that a request is refused at
// once (not after the queue timeout), unless a connection with at least two more waiting
// than its own has a waiter, whose place it takes (that waiter is refused at once).
func TestOverloadQueueIsBounded(t *testing.T) {
	o := NewOverload(2, 5*time.Second)
	held := []*overloadSlot{o.acquire("heavy", nil, nil), o.acquire("heavy", nil, nil)}
	outcome := make(chan string, 4)
	queue := func(key string) {
		go func() {
			s := o.acquire(key, nil, nil)
			if s == nil {
				outcome <- key + " refused"
				return
			}
			outcome <- key + " granted"
			s.release()
		}()
	}
	queue("heavy")
	waitQueued(t, o, 1)
	queue("heavy")
	waitQueued(t, o, 2)
	// Full. Another of heavy's is refused at once: heavy has the most waiting.
	start := time.Now()
	if s := o.acquire("heavy", nil, nil); s != nil {
		t.Fatal("a slot for a request past the cap and the full queue")
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("refused after %s, want at once (the queue timeout is 5s)", waited)
	}
	// A light connection's request takes the place of heavy's newest waiter.
	queue("light")
	select {
	case got := <-outcome:
		if got != "heavy refused" {
			t.Fatalf("%s, want one of heavy's waiters refused to make room for light's", got)
		}
	case <-time.After(time.Second):
		t.Fatal("a light connection's request met a full queue of a heavy one's and nothing was refused")
	}
	if _, q := o.Inflight(); q != 2 {
		t.Errorf("%d waiting, want 2 (heavy's oldest and light's)", q)
	}
	held[0].release()
	if got := <-outcome; got != "light granted" {
		t.Errorf("%s first when a slot freed, want light granted (it holds none)", got)
	}
	held[1].release()
	if got := <-outcome; got != "heavy granted" {
		t.Errorf("%s, want heavy granted", got)
	}
	if o.Rejected() != 2 {
		t.Errorf("Rejected = %d, want 2", o.Rejected())
	}
	o.mu.Lock()
	if len(o.conns) != 0 || len(o.waiters) != 0 {
		t.Errorf("%d connection records and %d waiters left after every release", len(o.conns), len(o.waiters))
	}
	o.mu.Unlock()
}

func waitQueued(t *testing.T, o *Overload, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, q := o.Inflight(); q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never %d waiting", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Through the proxy: past the cap and the queue, a request is answered 503 with
// Retry-After, and gRPC UNAVAILABLE, without reaching the upstream.
func TestOverloadAnswers503(t *testing.T) {
	release := make(chan struct{})
	var reached sync.WaitGroup
	reached.Add(1)
	var hits int
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		first := hits == 1
		mu.Unlock()
		if first {
			reached.Done()
			<-release
		}
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	p, err := New(Options{Upstream: u, Overload: NewOverload(1, 50*time.Millisecond), SendTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	defer close(release) // before the servers' Close, which waits for /hold
	go http.Get(front.URL + "/hold")
	reached.Wait()

	res, err := http.Get(front.URL + "/next")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("past the cap: %d, Retry-After %q, %q; want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	req, _ := http.NewRequest("POST", front.URL+"/pkg.Svc/Call", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/grpc")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Grpc-Status"); got != "14" {
		t.Errorf("gRPC past the cap: grpc-status %q, want 14 (UNAVAILABLE)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 1 {
		t.Errorf("the upstream saw %d requests, want 1 (the refused ones must not reach it)", hits)
	}
}

// BenchmarkOverloadAcquireRelease is the cap's own cost per request, under contention
// from every core.
func BenchmarkOverloadAcquireRelease(b *testing.B) {
	o := NewOverload(DefaultMaxRequests, DefaultQueueTimeout)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.acquire("127.0.0.1:40000", nil, nil).release()
		}
	})
}
