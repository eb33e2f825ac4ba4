package tlsfront

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"

	"github.com/drainproxy/drainproxy/config"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/h1serve"
	"github.com/drainproxy/drainproxy/h2serve"
	"github.com/drainproxy/drainproxy/listener"
)

// writeSelfSigned writes a self-signed certificate for name with the given serial, and
// its key, to dir/cert.pem and dir/key.pem.
func writeSelfSigned(t *testing.T, dir, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestStaticCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir, "a.test", 1)
	sc, err := LoadStaticCert(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		c, err := sc.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.test"})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}

	writeSelfSigned(t, dir, "a.test", 2)
	if err := sc.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := serial(); s != 2 || sc.Leaf().SerialNumber.Int64() != 2 {
		t.Fatalf("after Reload serial %d (leaf %d), want 2", s, sc.Leaf().SerialNumber.Int64())
	}

	// A key that does not match the certificate: Reload fails and the old pair stays.
	other := t.TempDir()
	_, otherKey := writeSelfSigned(t, other, "a.test", 3)
	b, _ := os.ReadFile(otherKey)
	os.WriteFile(keyFile, b, 0o600)
	err = sc.Reload()
	if err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("Reload with a mismatched key: %v; want an error naming %s", err, certFile)
	}
	if s := serial(); s != 2 {
		t.Fatalf("after a failed Reload serial %d, want the previous 2", s)
	}

	if _, err := LoadStaticCert(filepath.Join(dir, "missing.pem"), keyFile); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("LoadStaticCert of a missing file: %v; want an error naming it", err)
	}
}

func TestRedirectHandler(t *testing.T) {
	challenges := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "challenge") })
	tests := []struct {
		name, host, target string
		status, port       int
		wantCode           int
		wantLocation       string
	}{
		{"default port left out", "example.com", "/a/b?x=1&y=%20", 308, 443, 308, "https://example.com/a/b?x=1&y=%20"},
		{"port from the request is replaced", "example.com:8080", "/", 301, 8443, 301, "https://example.com:8443/"},
		{"port 0 means none", "example.com:80", "/p", 302, 0, 302, "https://example.com/p"},
		{"IPv6 literal", "[::1]:80", "/", 307, 443, 307, "https://[::1]/"},
		{"challenge path not redirected", "example.com", "/.well-known/acme-challenge/abc", 308, 443, 200, ""},
		{"no host", "", "/", 308, 443, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := RedirectHandler(tt.status, func() int { return tt.port }, challenges)
			r := httptest.NewRequest("GET", "http://x"+tt.target, nil)
			r.Host = tt.host
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.wantCode || w.Header().Get("Location") != tt.wantLocation {
				t.Errorf("got %d Location %q, want %d %q", w.Code, w.Header().Get("Location"), tt.wantCode, tt.wantLocation)
			}
		})
	}
}

func TestHSTS(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Strict-Transport-Security", "max-age=1")
	})
	w := httptest.NewRecorder()
	HSTS("max-age=31536000", upstream).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if got := w.Header().Values("Strict-Transport-Security"); len(got) == 0 || got[0] != "max-age=31536000" {
		t.Errorf("Strict-Transport-Security = %q; want ours first", got)
	}
	w = httptest.NewRecorder()
	HSTS("", upstream).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if got := w.Header().Values("Strict-Transport-Security"); len(got) != 1 || got[0] != "max-age=1" {
		t.Errorf("with HSTS off: %q; want the upstream's alone", got)
	}
}

func TestZapLogger(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Name: "tls", Output: &buf, JSONFormat: true, Level: hclog.Info})
	zl := ZapLogger(log).Named("obtain").With(zap.String("identifier", "a.test"))
	zl.Debug("hidden below info")
	zl.Info("obtaining certificate", zap.Duration("took", 1500*time.Millisecond), zap.Int("attempt", 2))
	zl.Error("could not get certificate", zap.Error(errors.New("rate limited")))

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (debug is below the level):\n%s", len(lines), buf.String())
	}
	want := []map[string]any{
		{"@level": "info", "@module": "tls.obtain", "@message": "obtaining certificate", "identifier": "a.test", "took": "1.5s", "attempt": float64(2)},
		{"@level": "error", "@module": "tls.obtain", "@message": "could not get certificate", "identifier": "a.test", "error": "rate limited"},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
	}
}

func TestCertsReady(t *testing.T) {
	r := newCertsReady([]string{"a.test", "B.test"})
	r.onEvent(context.Background(), "cert_obtaining", map[string]any{"identifier": "a.test"})
	r.onEvent(context.Background(), "cached_managed_cert", map[string]any{"sans": []string{"a.test"}})
	select {
	case <-r.done:
		t.Fatal("ready with b.test still missing")
	default:
	}
	if got := r.pending(); len(got) != 1 || got[0] != "b.test" {
		t.Fatalf("pending = %v, want [b.test]", got)
	}
	r.onEvent(context.Background(), "cached_managed_cert", map[string]any{"sans": []string{"b.test"}})
	r.onEvent(context.Background(), "cached_managed_cert", map[string]any{"sans": []string{"b.test"}}) // closes once
	select {
	case <-r.done:
	default:
		t.Fatal("not ready with every domain cached")
	}
}

// An HTTPS listener from static files: HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 minimum,
// HSTS, and SIGHUP's reload (called directly) seen by the next handshake.
func TestFrontStaticHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir, "a.test", 1)
	l := config.Listener{Address: "127.0.0.1:0", TLS: &config.TLS{CertFile: certFile, KeyFile: keyFile, MinVersion: tls.VersionTLS12, HSTS: "max-age=60"}}
	h2 := h2serve.New(h2serve.Options{})
	f, err := New(Options{Listeners: []config.Listener{l}, HTTP2: h2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	ln, err := listener.Listen(context.Background(), l.Address, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := drain.New(drain.Options{Grace: 5 * time.Second})
	h := d.Handler(f.Handler(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})))
	d.OnDrainStart(h2.Drain)
	d.OnStopAccepting(func(context.Context) { h2.StopAccepting() })
	var srv drain.Server
	var public net.Listener
	if os.Getenv("DRAINPROXY_SERVER_ENGINE") == "net/http" { // CI runs the suite on both engines
		s := &http.Server{Handler: h}
		srv = drain.HTTPServer(s)
		public, err = f.Wrap(l, ln, s)
	} else { // drainproxy's default
		s := &h1serve.Server{Handler: h}
		srv = s
		public, err = f.WrapH1(l, ln, s)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := public.(drain.StopAccepter); !ok {
		t.Fatalf("%T is not a drain.StopAccepter: the drain would reset its accept queue", public)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Add("public", srv, public)
	done := make(chan drain.Summary, 1)
	go func() { done <- d.Run(context.Background()) }()
	t.Cleanup(func() {
		d.Drain("test over")
		if sum := <-done; sum.ExitCode() != 0 {
			t.Errorf("drain exit code %d: %+v", sum.ExitCode(), sum)
		}
	})

	roots := x509.NewCertPool()
	addPEM := func() {
		b, _ := os.ReadFile(certFile)
		roots.AppendCertsFromPEM(b)
	}
	addPEM()
	get := func(h2 bool, maxVersion uint16) (*http.Response, string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "a.test", MaxVersion: maxVersion}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			return nil, "", err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), nil
	}
	for _, h2 := range []bool{true, false} {
		resp, body, err := get(h2, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]
		if body != want || resp.Header.Get("Strict-Transport-Security") != "max-age=60" {
			t.Errorf("h2 %v: served over %q with HSTS %q; want %q and max-age=60", h2, body, resp.Header.Get("Strict-Transport-Security"), want)
		}
	}
	if _, _, err := get(false, tls.VersionTLS11); err == nil {
		t.Errorf("a TLS 1.1 client got through; want the handshake refused")
	}

	writeSelfSigned(t, dir, "a.test", 2)
	addPEM()
	if err := f.ReloadStatic(); err != nil {
		t.Fatal(err)
	}
	resp, _, err := get(false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); s != 2 {
		t.Errorf("after ReloadStatic serving serial %d, want 2", s)
	}
	os.WriteFile(certFile, []byte("garbage"), 0o600)
	if err := f.ReloadStatic(); err == nil {
		t.Errorf("ReloadStatic of a garbage file: no error")
	}
	if resp, _, err = get(false, 0); err != nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Errorf("after a failed reload: %v; want serial 2 still served", err)
	}
}

func TestDefaultStorage(t *testing.T) {
	if os.Geteuid() == 0 {
		got, err := DefaultStorage(func(string) string { return "" })
		if err != nil || got != "/var/lib/drainproxy/certmagic" {
			t.Errorf("as root: %q, %v", got, err)
		}
		return
	}
	env := map[string]string{"HOME": "/home/u"}
	got, _ := DefaultStorage(func(k string) string { return env[k] })
	if got != "/home/u/.local/share/drainproxy/certmagic" {
		t.Errorf("with HOME: %q", got)
	}
	env["XDG_DATA_HOME"] = "/data"
	if got, _ = DefaultStorage(func(k string) string { return env[k] }); got != "/data/drainproxy/certmagic" {
		t.Errorf("with XDG_DATA_HOME: %q", got)
	}
	if _, err := DefaultStorage(func(string) string { return "" }); err == nil {
		t.Errorf("with neither: no error")
	}
}
