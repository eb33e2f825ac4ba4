package drain

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/testlog"
)

// stagedHandler holds each request at the stage its path names, until release closes:
//
//	/body      reads one byte of the body, then waits (request body)
//	/headers   reads the body, then waits before answering (upstream headers)
//	/response  sends the head and 5 bytes, then waits (response body)
//	/tunnel    hijacks the connection, answers 101, then waits (tunnel)
func stagedHandler(inside chan<- string, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(interface{ RecordRequestID(string) }); ok {
			rec.RecordRequestID("id-" + strings.TrimPrefix(r.URL.Path, "/"))
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/body"):
			r.Body.Read(make([]byte, 1))
		case strings.HasPrefix(r.URL.Path, "/headers"):
			io.Copy(io.Discard, r.Body)
		case strings.HasPrefix(r.URL.Path, "/response"):
			w.Write([]byte("hello"))
			http.NewResponseController(w).Flush()
		case strings.HasPrefix(r.URL.Path, "/tunnel"):
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			c.Write([]byte("abc"))
			inside <- r.URL.Path
			closed := make(chan struct{})
			go func() { io.Copy(io.Discard, c); close(closed) }() // ends when the drain closes c
			select {
			case <-release:
			case <-closed:
			}
			c.Close()
			return
		}
		inside <- r.URL.Path
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
}

// send writes a raw request on a new connection and keeps it open (closed at cleanup).
func send(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInflightSaysWhatEachRequestWaitsFor(t *testing.T) {
	d := New(Options{})
	inside, release := make(chan string, 8), make(chan struct{})
	defer close(release)
	addr, _ := serve(t, d, stagedHandler(inside, release))
	waitUntil(t, d.Ready)

	long := "/response/" + strings.Repeat("x", 300)
	send(t, addr, "POST /body?secret=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
	<-inside
	send(t, addr, "POST /headers HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	<-inside
	send(t, addr, "GET "+long+"?q=2 HTTP/1.1\r\nHost: a\r\n\r\n")
	<-inside
	send(t, addr, "GET /tunnel HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	<-inside

	in := d.Inflight(100)
	if in.Total != 4 || in.Requests != 3 || in.Upgraded != 1 || in.Truncated || len(in.Entries) != 4 {
		t.Fatalf("inflight %+v: want 4 entries, 3 requests and 1 upgraded", in)
	}
	want := []struct{ path, waits, proto string }{
		{"/body", WaitRequestBody, ProtoHTTP1},
		{"/headers", WaitUpstreamHeaders, ProtoHTTP1},
		{long[:MaxPathLen], WaitResponseBody, ProtoHTTP1},
		{"/tunnel", WaitTunnel, ProtoWebSocket},
	}
	for i, w := range want {
		e := in.Entries[i]
		if e.Path != w.path || e.WaitsFor != w.waits || e.Protocol != w.proto {
			t.Errorf("entry %d: %s %q waits for %q; want %s %q waits for %q", i, e.Protocol, e.Path, e.WaitsFor, w.proto, w.path, w.waits)
		}
		if e.Client == "" || e.Age <= 0 || !strings.HasPrefix(e.ID, "id-") {
			t.Errorf("entry %d: client %q, age %v, id %q", i, e.Client, e.Age, e.ID)
		}
		if i > 0 && e.Started.Before(in.Entries[i-1].Started) {
			t.Errorf("entry %d started before entry %d: not oldest first", i, i-1)
		}
	}
	if e := in.Entries[0]; e.BytesIn != 1 {
		t.Errorf("/body: %d bytes in; want the 1 byte read", e.BytesIn)
	}
	if e := in.Entries[2]; e.BytesOut != 5 {
		t.Errorf("/response: %d bytes out; want 5", e.BytesOut)
	}
	if e := in.Entries[3]; e.BytesOut != 3 {
		t.Errorf("/tunnel: %d bytes out; want 3", e.BytesOut)
	}

	capped := d.Inflight(2)
	if capped.Total != 4 || len(capped.Entries) != 2 || !capped.Truncated || capped.Entries[0].Path != "/body" {
		t.Errorf("Inflight(2) = %+v; want the 2 oldest of 4, truncated", capped)
	}
}

// At the deadline, the summary, the stats and each exchange say what was cut and how.
func TestDeadlineCountsWhatItCut(t *testing.T) {
	d := New(Options{Grace: 300 * time.Millisecond, ProgressInterval: -1})
	rec := &recorder{}
	d.Observe(rec)
	inside, release := make(chan string, 8), make(chan struct{})
	defer close(release)
	addr, done := serve(t, d, stagedHandler(inside, release))
	waitUntil(t, d.Ready)
	send(t, addr, "POST /headers HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
	<-inside
	send(t, addr, "GET /response HTTP/1.1\r\nHost: a\r\n\r\n")
	<-inside
	send(t, addr, "GET /tunnel HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	<-inside
	d.Drain("test")
	sum := <-done
	if sum.CutBeforeHead != 1 || sum.CutMidResponse != 1 || sum.UpgradesClosed != 1 || sum.Aborted != 3 {
		t.Errorf("summary %+v: want 1 cut before the head, 1 mid-response, 1 upgrade closed, 3 aborted", sum)
	}
	if st := d.Stats(); st.CutBeforeHead != 1 || st.CutMidResponse != 1 || st.UpgradesClosed != 1 {
		t.Errorf("stats %+v", st)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	cut := map[string]string{}
	for _, x := range rec.got {
		cut[x.Request.URL.Path] = x.CutByDrain
	}
	if cut["/headers"] != CutBeforeHead || cut["/response"] != CutMidResponse || cut["/tunnel"] != CutTunnel {
		t.Errorf("exchanges marked %v", cut)
	}
	if !strings.Contains(sum.Line(), "cut_before_head=1 cut_mid_response=1 upgrades_closed=1") {
		t.Errorf("summary line %q", sum.Line())
	}
}

// A clean drain leaves nothing marked as cut.
func TestCleanDrainCutsNothing(t *testing.T) {
	d := New(Options{})
	rec := &recorder{}
	d.Observe(rec)
	inside, release := make(chan string, 8), make(chan struct{})
	addr, done := serve(t, d, stagedHandler(inside, release))
	waitUntil(t, d.Ready)
	c := send(t, addr, "GET /response HTTP/1.1\r\nHost: a\r\n\r\n")
	<-inside
	d.Drain("test")
	close(release)
	io.Copy(io.Discard, c)
	sum := <-done
	if sum.CutBeforeHead+sum.CutMidResponse+sum.UpgradesClosed != 0 || sum.Drained != 1 {
		t.Errorf("summary %+v", sum)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 1 || rec.got[0].CutByDrain != "" {
		t.Errorf("exchanges %+v", rec.got)
	}
}

// While the wait step runs, a line every ProgressInterval names what is left; the line
// that ends the wait names the last request to finish.
func TestProgressLines(t *testing.T) {
	var out testlog.Buffer
	d := New(Options{Logger: testLogger(&out), ProgressInterval: 100 * time.Millisecond})
	inside, release := make(chan string, 8), make(chan struct{})
	addr, done := serve(t, d, stagedHandler(inside, release))
	waitUntil(t, d.Ready)
	c := send(t, addr, "GET /response/slow?token=x HTTP/1.1\r\nHost: a\r\n\r\n")
	<-inside
	d.Drain("test")
	waitUntil(t, func() bool { return strings.Count(out.String(), "drain progress") >= 2 })
	close(release)
	io.Copy(io.Discard, bufio.NewReader(c))
	<-done
	logs := out.String()
	for _, want := range []string{
		"drain progress: waiting", "requests=1", "HTTP/1.1 GET /response/slow", "id=id-response/slow", "(response body)", "left=",
		"in-flight requests finished", "last=\"HTTP/1.1 GET /response/slow",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "token=x") {
		t.Errorf("a query string reached the log:\n%s", logs)
	}
}

func TestTerminationLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "termination-log")
	os.WriteFile(path, []byte("an older drain, a longer line than this one will be\n"), 0o644)
	d := New(Options{TerminationLog: path})
	_, done := serve(t, d, http.NotFoundHandler())
	waitUntil(t, d.Ready)
	d.Drain("test")
	<-done
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); !strings.HasPrefix(got, "drain complete: drained=0 aborted=0 ") || !strings.HasSuffix(got, "exit_code=0\n") {
		t.Errorf("termination log %q", got)
	}
}

// HTTP/2 streams are named HTTP/2 or gRPC and counted as streams; a GET without a body
// does not wait for one (an HTTP/2 request always has a Body).
func TestInflightNamesHTTP2Streams(t *testing.T) {
	d := New(Options{})
	inside, release := make(chan string, 8), make(chan struct{})
	defer close(release)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.Handler(stagedHandler(inside, release)), Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	d.AddServer("h2c", srv, ln)
	go d.Run(context.Background())
	t.Cleanup(func() { d.Force("test over") })
	waitUntil(t, d.Ready)

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	for _, req := range []*http.Request{
		mustRequest(t, "GET", "http://"+ln.Addr().String()+"/wait/get", "", ""),
		mustRequest(t, "POST", "http://"+ln.Addr().String()+"/headers/grpc", "application/grpc+proto", "x"),
	} {
		go func() {
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		<-inside
	}
	in := d.Inflight(10)
	if in.Total != 2 || in.Streams != 2 || in.Requests != 0 {
		t.Fatalf("inflight %+v: want 2 HTTP/2 streams", in)
	}
	got := map[string]string{}
	for _, e := range in.Entries {
		got[e.Path] = e.Protocol + " " + e.WaitsFor
	}
	if got["/wait/get"] != "HTTP/2 upstream headers" || got["/headers/grpc"] != "gRPC upstream headers" {
		t.Errorf("entries %v", got)
	}
}

func mustRequest(t *testing.T, method, url, contentType, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}
