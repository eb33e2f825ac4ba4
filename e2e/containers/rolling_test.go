package containers

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// router stands in for a Service's endpoints and kube-proxy: it sends each request to
// the next replica whose /readyz last answered 200, and stops sending to one only
// endpointLag after it first saw it not ready (endpoint removal takes a while to
// propagate). It never retries: a request a replica fails reaches the client as a 502.
type router struct {
	mu       sync.Mutex
	replicas []*replica
	next     int
	stop     chan struct{}
	done     sync.WaitGroup
}

type replica struct {
	name          string
	readyz        string
	proxy         *httputil.ReverseProxy
	routable      bool
	notReadySince time.Time
}

const endpointLag = time.Second

func startRouter(t *testing.T) (*router, string) {
	t.Helper()
	r := &router{stop: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	r.done.Go(func() { srv.Serve(ln) })
	r.done.Go(r.watch)
	t.Cleanup(func() {
		close(r.stop)
		srv.Close()
		r.done.Wait()
	})
	return r, ln.Addr().String()
}

func (r *router) add(name, addr, readyz string) {
	target := &url.URL{Scheme: "http", Host: addr}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		// A new connection per request: Go's Transport resends a request that failed on
		// a reused connection, which would hide a lost request from the count.
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replicas = append(r.replicas, &replica{name: name, readyz: readyz, proxy: rp})
}

func (r *router) remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, rep := range r.replicas {
		if rep.name == name {
			r.replicas = append(r.replicas[:i], r.replicas[i+1:]...)
			return
		}
	}
}

func (r *router) routable(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rep := range r.replicas {
		if rep.name == name {
			return rep.routable
		}
	}
	return false
}

// watch polls every replica's /readyz, as the endpoints controller follows readiness.
func (r *router) watch() {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		reps := append([]*replica(nil), r.replicas...)
		r.mu.Unlock()
		for _, rep := range reps {
			ready := false
			if resp, err := client.Get(rep.readyz); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == 200
			}
			r.mu.Lock()
			switch {
			case ready:
				rep.routable, rep.notReadySince = true, time.Time{}
			case rep.notReadySince.IsZero():
				rep.notReadySince = time.Now()
			case time.Since(rep.notReadySince) >= endpointLag:
				rep.routable = false
			}
			r.mu.Unlock()
		}
	}
}

func (r *router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	var pick *replica
	for range r.replicas {
		rep := r.replicas[r.next%len(r.replicas)]
		r.next++
		if rep.routable {
			pick = rep
			break
		}
	}
	r.mu.Unlock()
	if pick == nil {
		http.Error(w, "no ready replica", http.StatusServiceUnavailable)
		return
	}
	pick.proxy.ServeHTTP(w, req)
}

// A rolling restart of 3 replicas of the two-container pod (maxSurge 1, maxUnavailable 0,
// as in the manifest) behind readiness-aware routing, under a no-retry load: 0 failed.
func TestRollingRestart(t *testing.T) {
	im := needImages(t)
	spec := loadDeployment(t, "two-containers.yaml")
	r, addr := startRouter(t)
	waitRoutable := func(name string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !r.routable(name); {
			if time.Now().After(deadline) {
				t.Fatalf("replica %s never became routable", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	start := func(name string) *pod {
		p := startPod(t, im, name, spec)
		r.add(name, p.ip+":8080", "http://"+p.ip+":9901/readyz")
		waitRoutable(name)
		return p
	}
	old := []*pod{start("old0"), start("old1"), start("old2")}

	l := startLoad(addr, 4, func() bool { return true })
	defer l.finish()
	for deadline := time.Now().Add(30 * time.Second); l.ok.Load() < 200; {
		if time.Now().After(deadline) {
			t.Fatalf("the load does not get through: %s", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, p := range old {
		start("new" + string(rune('0'+i))) // surge: the new replica is ready first
		tr := p.terminate()
		r.remove("old" + string(rune('0'+i)))
		if code := tr.codes["drainproxy"]; code != "0" || len(tr.killed) > 0 {
			t.Errorf("old replica %d: drainproxy exited %s, SIGKILLed %v", i, code, tr.killed)
		}
	}
	okDuring := l.ok.Load()
	l.finish()
	t.Logf("rolling restart: load %s", l)
	if l.failed() != 0 {
		t.Errorf("%d requests failed during the rolling restart", l.failed())
	}
	if okDuring < 1000 {
		t.Errorf("only %d requests were served: the load did not run through the restart", okDuring)
	}
}
