package proxy_test

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/badupstream"
	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/internal/testlog"
)

var strayVs = flag.String("stray-vs", "", "TestStrayResponseOthers: run the poisoning test against nginx or haproxy (keep-alive pools as bench/ configures them)")

// TestStrayResponseOthers runs the poisoning tests against another proxy with a keep-alive
// pool to the same malicious upstream, for the comparison in docs/requests.md:
//
//	go test -run TestStrayResponseOthers -v ./proxy/ -args -stray-vs=nginx
//	go test -run TestStrayResponseOthers -v ./proxy/ -args -stray-vs=haproxy
//
// It counts what the clients got and fails only when nothing was answered at all (a rig
// that measures nothing).
func TestStrayResponseOthers(t *testing.T) {
	if *strayVs == "" {
		t.Skip("runs with -stray-vs=nginx or -stray-vs=haproxy")
	}
	up, err := badupstream.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	addr := startOther(t, *strayVs, up.Addr())
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	f := &badFront{log: &testlog.Buffer{}, up: up, base: "http://" + addr, c: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
	var answered int
	for _, transport := range []bool{false, true} {
		method := map[bool]string{false: "GET", true: "POST"}[transport]
		for _, gap := range poisonGaps {
			var wrong, failed, n int
			for range 3 {
				a, _ := f.exchange(t, poisonPath, http.MethodGet, transport)
				time.Sleep(gap)
				for range 3 {
					r := f.plainExchange(t, transport)
					n++
					wrong += btoi(r.wrong)
					failed += btoi(r.failed)
				}
				f.waitUpstream(t, a.nonce)
				time.Sleep(20 * time.Millisecond)
			}
			answered += n - failed
			t.Logf("%s %s sequential gap %v: %d of %d next requests wrong, %d failed", *strayVs, method, gap, wrong, n, failed)
		}
		var mu sync.Mutex
		var wrong, failed, n int
		var wg sync.WaitGroup
		for c := range 10 {
			wg.Go(func() {
				for i := range 60 {
					recs := []exchangeRecord{}
					if (i+c)%20 == 0 {
						recs = append(recs, f.recordExchange(t, poisonPath, transport))
					}
					recs = append(recs, f.plainExchange(t, transport))
					mu.Lock()
					for _, r := range recs {
						n++
						wrong += btoi(r.wrong)
						failed += btoi(r.failed)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		answered += n - failed
		t.Logf("%s %s concurrent 10x60 + 30 poisoning: %d of %d wrong, %d failed", *strayVs, method, wrong, n, failed)
	}
	if answered == 0 {
		t.Error("no request was answered: the rig measured nothing")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// startOther starts nginx or haproxy on a free loopback port in front of upstream, with a
// keep-alive pool to it, and returns its address.
func startOther(t *testing.T, name, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, name+".conf")
	var cmd *exec.Cmd
	switch name {
	case "nginx":
		bin := testenv.NeedProgram(t, "nginx", "nginx")
		// bench/lib.sh's configuration: keepalive 256, HTTP/1.1, Connection cleared.
		os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 2;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    upstream app {
        server %[2]s;
        keepalive 256;
    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, upstream, addr)), 0o644)
		cmd = exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	case "haproxy":
		bin := testenv.NeedProgram(t, "haproxy", "haproxy")
		// HAProxy's defaults for server-side keep-alive: http-keep-alive, http-reuse safe.
		os.WriteFile(conf, []byte(fmt.Sprintf(`global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse safe
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind %s
    default_backend app
backend app
    server app %s
`, addr, upstream)), 0o644)
		cmd = exec.Command(bin, "-db", "-f", conf)
	default:
		t.Fatalf("-stray-vs=%s: want nginx or haproxy", name)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGTERM: nginx's master stops its workers too (SIGKILL would orphan them).
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
