package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 13, item 4: an upstream that stalls mid-body, a client that never reads its
// response and an upload that stops, all in flight at SIGTERM, are cut by the progress
// timeouts: the drain completes with nothing aborted, exits 0, and the access log says why
// each was cut. Before, each held its request until the grace deadline, and the drain
// ended "aborted" with exit code 1.
func TestDrainCompletesDespiteStalledTransfers(t *testing.T) {
	arrived := make(chan string, 8)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stall", func(w http.ResponseWriter, r *http.Request) {
		arrived <- "stall"
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 64<<10))
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // nothing more, until the proxy gives up
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		arrived <- "big"
		chunk := make([]byte, 32<<10)
		for range 64 << 20 / len(chunk) { // far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		arrived <- "upload"
		io.Copy(io.Discard, r.Body)
	})
	up := serveUpstream(t, mux)

	dir := t.TempDir()
	accessLog := filepath.Join(dir, "access.log")
	config := filepath.Join(dir, "config.hcl")
	os.WriteFile(config, []byte(fmt.Sprintf(`
upstream {
  url = "http://%s"
  read_timeout = "1s"
}
drain {
  grace = "30s"
}
limits {
  send_timeout = "1s"
  client_body_timeout = "1s"
}
`, up)), 0o644)
	p := startProxy(t, "-config", config, "-listen", "127.0.0.1:0", "-admin", "off", "-access-log", accessLog)

	// The stalled download: headers and the first bytes come, then nothing.
	stalled, err := http.Get(p.URL() + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Body.Close()
	cut := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stalled.Body)
		cut <- err
	}()
	// The client that never reads.
	reader := dialTCP(t, p.Addr)
	fmt.Fprint(reader, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	// The upload that stops after its first kilobyte.
	uploader := dialTCP(t, p.Addr)
	fmt.Fprintf(uploader, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("u", 1000))
	for range 3 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("not every request reached the upstream")
		}
	}

	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	sum := p.WaitLog("drain complete", time.Second)
	if sum["aborted"] != 0.0 {
		t.Errorf("summary %v: want aborted=0", sum)
	}
	if err := <-cut; err == nil {
		t.Error("the stalled download ended as if complete")
	}
	uploader.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(uploader), nil); err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled upload: %v, %v; want 408", resp, err)
	}

	reasons := map[string]string{}
	data, err := os.ReadFile(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e struct {
			Path          string `json:"path"`
			UpstreamError string `json:"upstream_error"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		reasons[e.Path] = e.UpstreamError
	}
	want := map[string]string{"/stall": "read_timeout", "/big": "send_timeout", "/upload": "client_body_timeout"}
	for path, reason := range want {
		if reasons[path] != reason {
			t.Errorf("access log for %s: upstream_error %q, want %q (all: %v)", path, reasons[path], reason, reasons)
		}
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Issue 13, item 5, through the binary: with max_connections full of idle keep-alive
// clients, a new client is served long before idle_timeout, in the place of the one idle
// longest.
func TestMaxConnectionsMakesRoomForNewClient(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.hcl")
	os.WriteFile(config, []byte(fmt.Sprintf(`
upstream {
  url = "%s"
}
limits {
  max_connections = 2
  idle_timeout = "10m"
}
`, startUpstream(t))), 0o644)
	p := startProxy(t, "-config", config, "-listen", "127.0.0.1:0", "-admin", "off", "-access-log", "off")

	get := func(c net.Conn, br *bufio.Reader) error {
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	var conns []net.Conn
	var readers []*bufio.Reader
	for i := range 3 {
		c := dialTCP(t, p.Addr)
		br := bufio.NewReader(c)
		if err := get(c, br); err != nil {
			t.Fatalf("client %d of max_connections=2 (the first two are idle keep-alive ones): %v", i+1, err)
		}
		conns, readers = append(conns, c), append(readers, br)
	}
	// The first, idle longest, made room: the proxy closed it.
	conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := readers[0].ReadByte(); err != io.EOF {
		t.Errorf("the oldest idle connection: %v, want EOF", err)
	}
	if err := get(conns[2], readers[2]); err != nil {
		t.Errorf("the new client's connection is kept alive: %v", err)
	}
}
