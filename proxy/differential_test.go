package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/badupstream"
	"github.com/drainproxy/drainproxy/internal/testlog"
	"github.com/drainproxy/drainproxy/proxy"
)

// badFront is the proxy, behind drain's per-request wrapper as the binary serves it, in
// front of a malicious upstream.
type badFront struct {
	log  *testlog.Buffer // the proxy's log
	up   *badupstream.Server
	base string
	c    *http.Client
}

func newBadFront(t *testing.T, coalesce bool) *badFront {
	t.Helper()
	return newBadFrontWith(t, coalesce, proxy.Options{})
}

// newBadFrontWith is newBadFront with opts (Upstream and Logger are set here).
func newBadFrontWith(t *testing.T, coalesce bool, opts proxy.Options) *badFront {
	t.Helper()
	up, err := badupstream.Start()
	if err != nil {
		t.Fatal(err)
	}
	up.Coalesce = coalesce
	t.Cleanup(func() { up.Close() })
	log := &testlog.Buffer{}
	opts.Upstream = &url.URL{Scheme: "http", Host: up.Addr()}
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: log, Level: hclog.Debug})
	p, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	addr := serveOn(t, drain.New(drain.Options{}).Handler(p), nil)
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", log)
		}
	})
	return &badFront{log: log, up: up, base: "http://" + addr, c: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

var nonceSeq atomic.Int64

func newNonce() string { return fmt.Sprintf("n%d_%08x", nonceSeq.Add(1), rand.Uint32()) }

// outcome is what one client got: the status, or 0 when the answer was cut short (no
// response, or a body that ended in an error).
type outcome struct {
	status int
	body   string
	nonce  string
}

// send asks the proxy for case name, on the inline path (a bodiless GET or HEAD) or on the
// http.Transport's (POST, or a HEAD with a body). It fails the test when anything in the
// answer carries another request's nonce.
func (f *badFront) send(t *testing.T, name, method string, transport bool) outcome {
	t.Helper()
	out, foreign := f.exchange(t, name, method, transport)
	for _, got := range foreign {
		t.Errorf("%s %s (transport path %v): the client got bytes of another request: %q",
			method, name, transport, got)
	}
	return out
}

// exchange is send without the verdict: it returns what came back that carries another
// request's nonce (nil when nothing did).
func (f *badFront) exchange(t *testing.T, name, method string, transport bool) (outcome, [][]byte) {
	t.Helper()
	nonce := newNonce()
	var body io.Reader
	switch {
	case transport && method == http.MethodHead:
		body = strings.NewReader("x")
	case transport:
		method, body = http.MethodPost, strings.NewReader("x")
	}
	req, err := http.NewRequest(method, f.base+"/"+name, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(badupstream.NonceHeader, nonce)
	out := outcome{nonce: nonce}
	resp, err := f.c.Do(req)
	if err != nil {
		return out, nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var head bytes.Buffer
	resp.Header.Write(&head)
	var foreign [][]byte
	for _, got := range [][]byte{head.Bytes(), b} {
		if other := badupstream.Foreign(got, nonce); other != "" {
			foreign = append(foreign, got)
		}
	}
	if err == nil {
		out.status, out.body = resp.StatusCode, string(b)
	}
	return out, foreign
}

// probe is the next client: a plain GET or POST of "ok" that must get exactly its own answer.
func (f *badFront) probe(t *testing.T, after string, transport bool) {
	t.Helper()
	o := f.send(t, "ok", http.MethodGet, transport)
	if o.status != 200 || o.body != "nonce:"+o.nonce {
		t.Errorf("after %s (transport path %v): the next client got %d %q, want 200 %q",
			after, transport, o.status, o.body, "nonce:"+o.nonce)
	}
}

func (f *badFront) waitUpstream(t *testing.T, nonce string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f.up.Done(nonce) {
		if time.Now().After(deadline) {
			// A request the proxy refused early never reached the upstream: fine.
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func caseMethod(c badupstream.Case) string {
	if c.Method != "" {
		return c.Method
	}
	return http.MethodGet
}

// TestBadUpstreamDifferential sends every case of the malicious upstream's corpus through
// the inline path and the http.Transport path: both answer the client alike, as the case
// wants, and the next client on the same upstream connection pool always gets its own
// answer. Each part of an answer is written separately (late bytes), and the next client
// asks only once the upstream has written everything: the bytes are waiting on the
// connection, as when an idle connection receives them.
func TestBadUpstreamDifferential(t *testing.T) {
	f := newBadFront(t, false)
	for _, c := range badupstream.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			method := caseMethod(c)
			var got [2]outcome
			for i, transport := range []bool{false, true} {
				for range 3 {
					got[i] = f.send(t, c.Name, method, transport)
					f.waitUpstream(t, got[i].nonce)
					f.probe(t, c.Name, transport)
					f.probe(t, c.Name, !transport)
				}
			}
			if got[0].status != got[1].status {
				t.Errorf("inline path answered %d, Transport path %d", got[0].status, got[1].status)
			}
			if got[0].status != c.Want {
				t.Errorf("inline path answered %d, want %d", got[0].status, c.Want)
			}
			if c.Body && method != http.MethodHead {
				for i, o := range got {
					if o.status == c.Want && o.body != "nonce:"+o.nonce {
						t.Errorf("path %d: body %q, want %q", i, o.body, "nonce:"+o.nonce)
					}
				}
			}
		})
	}
}

// TestBadUpstreamConcurrent mixes the whole corpus and plain requests from concurrent
// clients on both paths: no client ever gets a byte of another's. Answers come in one
// write each, so that what follows a response arrives with it whatever the scheduling.
func TestBadUpstreamConcurrent(t *testing.T) {
	f := newBadFront(t, true)
	cases := badupstream.Cases()
	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	var okWrong atomic.Int64
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWorker {
				transport := r.IntN(2) == 0
				if r.IntN(2) == 0 {
					o := f.send(t, "ok", http.MethodGet, transport)
					if o.status != 200 || o.body != "nonce:"+o.nonce {
						okWrong.Add(1)
						t.Errorf("plain request (transport path %v): %d %q, want 200 %q",
							transport, o.status, o.body, "nonce:"+o.nonce)
					}
					continue
				}
				c := cases[r.IntN(len(cases))]
				if c.Name == "huge-header" {
					continue // 2 MiB a time: the sequential test has it
				}
				f.send(t, c.Name, caseMethod(c), transport)
			}
		})
	}
	wg.Wait()
	if n := okWrong.Load(); n > 0 {
		t.Errorf("%d plain requests did not get their own answer", n)
	}
}
