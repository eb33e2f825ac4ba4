package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/standin"
)

// countingUpstream is an upstream for the load clients (POST / and GET /) that counts the
// requests it answered, and can be killed.
type countingUpstream struct {
	addr   string
	served atomic.Int64
	srv    *http.Server
}

func startCountingUpstream(t *testing.T) *countingUpstream {
	t.Helper()
	u := &countingUpstream{}
	mux := http.NewServeMux()
	mux.Handle("/", standin.Handler())
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, standin.Hello) })
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		u.served.Add(1)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

// writeConfig writes body as the config file at path.
func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// upstreamConfig is a config file for upstream, with adminExtra in the admin block and
// extra at the end.
func upstreamConfig(upstream, adminExtra, extra string) string {
	return `listener {
  address = "127.0.0.1:0"
}
admin {
  address = "127.0.0.1:0"
` + adminExtra + `}
upstream {
  url = "http://` + upstream + `"
}
` + extra
}

// Issue 16.4: under a load of never-retrying keep-alive clients, SIGHUP moves the upstream
// to another address; then the old upstream dies. Not one request fails.
func TestReloadMovesTheUpstreamUnderLoad(t *testing.T) {
	oldUp, newUp := startCountingUpstream(t), startCountingUpstream(t)
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	writeConfig(t, cfgPath, upstreamConfig(oldUp.addr, "", ""))
	p := startProxy(t, "-config", cfgPath)

	stop := make(chan struct{})
	var res loadResult
	clients := keepAliveClients(p.Addr, 20, "/", stop, &res)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			close(stop)
			clients.Wait()
		}
	})
	waitFor(t, 10*time.Second, func() bool { return oldUp.served.Load() > 300 })

	writeConfig(t, cfgPath, upstreamConfig(newUp.addr, "", ""))
	p.Signal(syscall.SIGHUP)
	m := p.WaitLog("configuration reloaded", 10*time.Second)
	if changed, _ := m["changed"].(string); !strings.Contains(changed, "upstream.url") {
		t.Fatalf("the reload line says changed=%q, want upstream.url in it", changed)
	}
	waitFor(t, 10*time.Second, func() bool { return newUp.served.Load() > 300 })
	atOld := oldUp.served.Load()
	oldUp.srv.Close()                                                            // the old upstream dies
	waitFor(t, 10*time.Second, func() bool { return newUp.served.Load() > 600 }) // and the load goes on

	close(stop)
	clients.Wait()
	stopped = true
	if n := res.lost.Load(); n != 0 {
		t.Fatalf("%d requests lost across the reload (first: %v)", n, res.firstErr.Load())
	}
	if n := res.bad.Load(); n != 0 {
		t.Fatalf("%d responses were not 200 across the reload", n)
	}
	if n := oldUp.served.Load() - atOld; n != 0 {
		t.Errorf("the old upstream served %d requests once the new one had served 300", n)
	}
	t.Logf("%d requests, %d to the old upstream, %d to the new one", res.ok.Load(), oldUp.served.Load(), newUp.served.Load())
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// Issue 16.1: health check settings change in place: a reload that points the check at a
// path the upstream answers 404 on makes /readyz say 503 (no restart), and one that
// points it back makes it ready again.
func TestReloadChangesTheHealthCheckInPlace(t *testing.T) {
	up := startCountingUpstream(t)
	cfgPath := filepath.Join(t.TempDir(), "drainproxy.hcl")
	check := func(path string) string {
		return "health_check {\n  path = \"" + path + "\"\n  interval = \"100ms\"\n  unhealthy_threshold = 1\n  healthy_threshold = 1\n}\n"
	}
	writeConfig(t, cfgPath, upstreamConfig(up.addr, "", check("/")))
	p := startProxy(t, "-config", cfgPath)
	readyz := func() int {
		resp, err := http.Get("http://" + p.Admin + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := readyz(); code != 200 {
		t.Fatalf("/readyz = %d at start, want 200", code)
	}
	writeConfig(t, cfgPath, upstreamConfig(up.addr, "", check("/no-such-path")))
	p.Signal(syscall.SIGHUP)
	m := p.WaitLog("configuration reloaded", 10*time.Second)
	if changed, _ := m["changed"].(string); changed != "health_check.path" {
		t.Fatalf("the reload line says changed=%q, want health_check.path", changed)
	}
	waitFor(t, 10*time.Second, func() bool { return readyz() == http.StatusServiceUnavailable })

	time.Sleep(sigtrap.Coalesce) // else the next SIGHUP counts as the same delivery
	writeConfig(t, cfgPath, upstreamConfig(up.addr, "", check("/")))
	p.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return readyz() == 200 })
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// Issue 16.1: a reload that moves an HTTPS listener's certificate files serves the pair
// from the new paths from the next handshake on.
func TestReloadMovesTheCertificateFiles(t *testing.T) {
	p, _, tlsPort, ca, dir := tlsStaticProxy(t, startUpstream(t))
	cfgPath, _ := p.WaitLog("drainproxy starting", time.Second)["config"].(string)
	serial := func() int64 {
		t.Helper()
		return tlsGet(t, tlsPort, ca.Pool, false, "/").TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 100 {
		t.Fatalf("serving serial %d, want 100", s)
	}
	moved := t.TempDir()
	certFile, keyFile := ca.issue(t, moved, 200, tlsDomain)
	conf, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.ReplaceAll(string(conf), filepath.Join(dir, "cert.pem"), certFile)
	edited = strings.ReplaceAll(edited, filepath.Join(dir, "key.pem"), keyFile)
	if edited == string(conf) {
		t.Fatalf("the config file does not name %s:\n%s", dir, conf)
	}
	writeConfig(t, cfgPath, edited)
	p.Signal(syscall.SIGHUP)
	m := p.WaitLog("configuration reloaded", 10*time.Second)
	if changed, _ := m["changed"].(string); changed != "listener.tls.cert_file, listener.tls.key_file" {
		t.Fatalf("the reload line says changed=%q, want listener.tls.cert_file, listener.tls.key_file", changed)
	}
	if p.FindLog("these settings changed but a reload cannot apply them: they need an upgrade (SIGUSR2) or a restart", 0) != nil {
		t.Fatal("the reload says the certificate paths need an upgrade")
	}
	if s := serial(); s != 200 {
		t.Fatalf("after the reload serving serial %d, want 200 from the new files", s)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}
