package main

// End-to-end tests of the TLS front door: a real Pebble ACME server on 127.0.0.1 (Debian
// package pebble) validates real HTTP-01 and TLS-ALPN-01 challenges against drainproxy's
// own listeners, resolving the test names through a DNS server in the test that answers
// 127.0.0.1 for every name. Clients verify drainproxy's certificate against Pebble's root.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/drainproxy/drainproxy/internal/testenv"
	"github.com/drainproxy/drainproxy/sigtrap"
	"github.com/drainproxy/drainproxy/standin"
)

const tlsDomain = "app.drainproxy.test"

// tlsFreePort returns a port that was free on 127.0.0.1 a moment ago. Pebble must know
// drainproxy's ports before either starts, so they cannot be chosen by binding port 0.
func tlsFreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tlsCA is a certificate authority made in the test, for static certificates and for
// Pebble's own HTTPS.
type tlsCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
	Pool *x509.CertPool
}

func tlsNewCA(t testing.TB, name string) *tlsCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tlsCA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool}
}

// issue writes a leaf certificate for names (DNS names or IP addresses) with the given
// serial, and its key, into dir; it returns the two paths.
func (ca *tlsCA) issue(t testing.TB, dir string, serial int64, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Written through temporary files and renamed, as a certificate deployment would, so
	// that a SIGHUP never reads half a file.
	tlsWriteFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	tlsWriteFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func tlsWriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsStartDNS serves DNS on 127.0.0.1 (UDP) answering 127.0.0.1 to every A query and
// nothing to other queries (AAAA, CAA), and returns its address, for pebble -dnsserver.
func tlsStartDNS(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// tlsPebble is a running Pebble.
type tlsPebble struct {
	Directory string         // the ACME directory URL
	TLSRoots  string         // PEM file of the CA of Pebble's own HTTPS, for acme.trusted_roots
	Roots     *x509.CertPool // Pebble's issuing root: what drainproxy's certificates chain to

	mu    sync.Mutex
	lines []string
}

// tlsStartPebble starts Pebble on 127.0.0.1, validating HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort of 127.0.0.1 (where the test DNS points every name). It skips
// the test when pebble is not installed.
func tlsStartPebble(t testing.TB, httpPort, tlsPort int) *tlsPebble {
	t.Helper()
	bin := testenv.NeedProgram(t, "pebble", "pebble")
	dir := t.TempDir()
	ca := tlsNewCA(t, "pebble test CA")
	certFile, keyFile := ca.issue(t, dir, 2, "127.0.0.1", "localhost")
	rootsFile := filepath.Join(dir, "pebble-ca.pem")
	tlsWriteFile(t, rootsFile, ca.PEM)
	acmeAddr := fmt.Sprintf("127.0.0.1:%d", tlsFreePort(t))
	mgmtAddr := fmt.Sprintf("127.0.0.1:%d", tlsFreePort(t))
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": acmeAddr, "managementListenAddress": mgmtAddr,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": httpPort, "tlsPort": tlsPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
	}})
	confFile := filepath.Join(dir, "pebble.json")
	tlsWriteFile(t, confFile, conf)

	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", tlsStartDNS(t))
	// No artificial validation sleeps and no rejected nonces: they only slow the tests.
	// Validation itself is real: PEBBLE_VA_ALWAYS_VALID is never set.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_VA_ALWAYS_VALID=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pb := &tlsPebble{Directory: "https://" + acmeAddr + "/dir", TLSRoots: rootsFile}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			pb.mu.Lock()
			pb.lines = append(pb.lines, sc.Text())
			pb.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-read
		cmd.Wait()
		if t.Failed() {
			t.Logf("pebble output:\n%s", pb.Logs())
		}
	})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	waitFor(t, 10*time.Second, func() bool {
		resp, err := client.Get(pb.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	resp, err := client.Get("https://" + mgmtAddr + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	root, _ := io.ReadAll(resp.Body)
	pb.Roots = x509.NewCertPool()
	if !pb.Roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble /roots/0 gave no PEM certificate: %q", root)
	}
	return pb
}

// Orders counts the new-order requests Pebble has received.
func (pb *tlsPebble) Orders() int {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	n := 0
	for _, l := range pb.lines {
		if strings.Contains(l, "Added order ") {
			n++
		}
	}
	return n
}

func (pb *tlsPebble) Logs() string {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return strings.Join(pb.lines, "\n")
}

// tlsConfigFile writes a drainproxy config file and returns its path.
func tlsConfigFile(t testing.TB, format string, args ...any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "drainproxy.hcl")
	tlsWriteFile(t, path, fmt.Appendf(nil, format, args...))
	return path
}

// tlsACMEConfig is a config with a plain listener on httpPort (redirecting to HTTPS; 0
// for none) and an ACME HTTPS listener on tlsPort, against pb.
func tlsACMEConfig(t testing.TB, pb *tlsPebble, upstream string, httpPort, tlsPort int, storage, challenges string) string {
	plain := ""
	if httpPort != 0 {
		plain = fmt.Sprintf("listener {\n  address = \"127.0.0.1:%d\"\n  redirect_https = true\n}\n", httpPort)
	}
	return tlsConfigFile(t, `%s
listener {
  address = "127.0.0.1:%d"
  tls {
    hsts = "max-age=600"
    acme {
      domains       = [%q]
      email         = "ops@drainproxy.test"
      ca            = %q
      trusted_roots = [%q]
      storage       = %q
      agree_terms   = true
      challenges    = [%s]
    }
  }
}
upstream { url = %q }
admin { address = "127.0.0.1:0" }
`, plain, tlsPort, tlsDomain, pb.Directory, pb.TLSRoots, storage, challenges, upstream)
}

// tlsClient is an HTTPS client that connects every request to 127.0.0.1:port, whatever
// the URL's host, and verifies the server against roots with the URL's host as the name.
// h2 chooses HTTP/2 by ALPN, or HTTP/1.1 only.
func tlsClient(port int, roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no HTTP/2
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// tlsGet fetches https://tlsDomain:port/path over HTTP/2 or HTTP/1.1 and checks the
// answer is the stand-in's, on the protocol asked for. It returns the response.
func tlsGet(t testing.TB, port int, roots *x509.CertPool, h2 bool, path string) *http.Response {
	t.Helper()
	c := tlsClient(port, roots, h2)
	defer c.CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("https://%s:%d%s", tlsDomain, port, path))
	if err != nil {
		t.Fatalf("HTTPS GET %s (h2 %v): %v", path, h2, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantProto := map[bool]int{true: 2, false: 1}[h2]
	if resp.StatusCode != http.StatusOK || string(body) != standin.Hello || resp.ProtoMajor != wantProto {
		t.Fatalf("HTTPS GET %s: %s %s %q; want HTTP/%d.x 200 %q", path, resp.Proto, resp.Status, body, wantProto, standin.Hello)
	}
	return resp
}

// tlsLogged reports whether drainproxy logged msg with every field in want.
func tlsLogged(p *proc, msg string, want map[string]any) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.lines {
		if m["@message"] != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if m[k] != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// HTTP-01 alone: Pebble fetches the key authorization from drainproxy's plain listener,
// then drainproxy serves the certificate over HTTP/2 and HTTP/1.1, with HSTS.
func TestTLSACMEHTTP01(t *testing.T) {
	httpPort, tlsPort := tlsFreePort(t), tlsFreePort(t)
	pb := tlsStartPebble(t, httpPort, tlsPort)
	conf := tlsACMEConfig(t, pb, startUpstream(t), httpPort, tlsPort, t.TempDir(), `"http-01"`)
	p := startProxy(t, "-config", conf)

	if !tlsLogged(p, "served key authentication", map[string]any{"challenge": "http-01", "identifier": tlsDomain}) {
		t.Errorf("drainproxy did not log answering the http-01 challenge (certmagic's log, bridged)")
	}
	if tlsLogged(p, "served key authentication certificate", nil) {
		t.Errorf("drainproxy answered a tls-alpn-01 challenge, which this test turned off")
	}
	for _, h2 := range []bool{true, false} {
		resp := tlsGet(t, tlsPort, pb.Roots, h2, "/")
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=600" {
			t.Errorf("Strict-Transport-Security = %q, want max-age=600", got)
		}
		if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != tlsDomain {
			t.Errorf("certificate names = %v, want [%s]", got, tlsDomain)
		}
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("Pebble received %d orders, want 1", n)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TLS-ALPN-01 alone, with no plain listener at all: Pebble validates on the HTTPS
// listener itself, and nothing listens where it would look for HTTP-01.
func TestTLSACMETLSALPN01(t *testing.T) {
	tlsPort := tlsFreePort(t)
	pb := tlsStartPebble(t, tlsFreePort(t), tlsPort)
	conf := tlsACMEConfig(t, pb, startUpstream(t), 0, tlsPort, t.TempDir(), `"tls-alpn-01"`)
	p := startProxy(t, "-config", conf)

	if !tlsLogged(p, "served key authentication certificate", map[string]any{"challenge": "tls-alpn-01", "server_name": tlsDomain}) {
		t.Errorf("drainproxy did not log answering the tls-alpn-01 challenge")
	}
	tlsGet(t, tlsPort, pb.Roots, true, "/")
	tlsGet(t, tlsPort, pb.Roots, false, "/")
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// Three replicas share one storage directory: certmagic's storage lock lets one of them
// order the certificate, and the others load it. Pebble validates on the first replica's
// ports whichever replica ordered: the challenge is in the shared storage too.
func TestTLSReplicasShareOneCertificate(t *testing.T) {
	type ports struct{ http, tls int }
	replicas := []ports{{tlsFreePort(t), tlsFreePort(t)}, {tlsFreePort(t), tlsFreePort(t)}, {tlsFreePort(t), tlsFreePort(t)}}
	pb := tlsStartPebble(t, replicas[0].http, replicas[0].tls)
	storage, upstream := t.TempDir(), startUpstream(t)
	procs := make([]*proc, len(replicas))
	for i, r := range replicas {
		procs[i] = launch(t, "-config", tlsACMEConfig(t, pb, upstream, r.http, r.tls, storage, `"http-01", "tls-alpn-01"`))
		if i == 0 {
			// Pebble validates every order on the first replica's ports: they must be open
			// before another replica orders, or that order's challenge fails and a second
			// order follows (seen under load).
			procs[0].WaitLog("drainproxy starting", 30*time.Second)
		}
	}
	serials := map[string]bool{}
	for i, r := range replicas {
		procs[i].WaitLog("ready", 60*time.Second)
		resp := tlsGet(t, r.tls, pb.Roots, true, "/")
		serials[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("Pebble received %d orders from 3 replicas sharing storage, want 1", n)
	}
	if len(serials) != 1 {
		t.Errorf("the replicas serve %d different certificates, want 1: %v", len(serials), serials)
	}
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		if code := p.Wait(10 * time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	}
}

// tlsStaticProxy starts drainproxy with a plain listener that redirects (status 301) and
// an HTTPS listener with certificate files from a test CA. It returns the proxy, the two
// ports, the CA and the certificate directory.
func tlsStaticProxy(t *testing.T, upstream string, extra ...string) (p *proc, httpPort, tlsPort int, ca *tlsCA, dir string) {
	t.Helper()
	ca, dir = tlsNewCA(t, "drainproxy test CA"), t.TempDir()
	certFile, keyFile := ca.issue(t, dir, 100, tlsDomain)
	httpPort, tlsPort = tlsFreePort(t), tlsFreePort(t)
	conf := tlsConfigFile(t, `
listener {
  address         = "127.0.0.1:%d"
  redirect_https  = true
  redirect_status = 301
}
listener {
  address = "127.0.0.1:%d"
  tls {
    cert_file = %q
    key_file  = %q
  }
}
upstream { url = %q }
admin { address = "127.0.0.1:0" }
`, httpPort, tlsPort, certFile, keyFile, upstream)
	p = startProxy(t, append([]string{"-config", conf}, extra...)...)
	return p, httpPort, tlsPort, ca, dir
}

// The plain listener redirects to HTTPS with the configured status, keeping host, path
// and query, except ACME challenge paths, which reach the app.
func TestTLSRedirect(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/", standin.Handler())
	mux.HandleFunc("/.well-known/acme-challenge/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "challenge reached the app")
	})
	p, httpPort, tlsPort, ca, _ := tlsStaticProxy(t, "http://"+serveUpstream(t, mux))

	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/a/b?x=1&y=2", httpPort), nil)
	req.Host = tlsDomain + ":80"
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := fmt.Sprintf("https://%s:%d/a/b?x=1&y=2", tlsDomain, tlsPort)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("GET http://.../a/b?x=1&y=2: %s, Location %q; want 301 and %q", resp.Status, resp.Header.Get("Location"), want)
	}

	resp, err = noFollow.Get(fmt.Sprintf("http://127.0.0.1:%d/.well-known/acme-challenge/token123", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "challenge reached the app" {
		t.Errorf("challenge path: %s %q; want it passed to the app, not redirected", resp.Status, body)
	}

	// Following the redirect lands on HTTPS, verified against the test CA.
	tlsGet(t, tlsPort, ca.Pool, true, "/")
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// SIGHUP re-reads the certificate files; a pair that does not load keeps the old one.
func TestTLSStaticCertReloadOnSIGHUP(t *testing.T) {
	p, _, tlsPort, ca, dir := tlsStaticProxy(t, startUpstream(t))
	serial := func() int64 {
		t.Helper()
		return tlsGet(t, tlsPort, ca.Pool, false, "/").TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 100 {
		t.Fatalf("serving serial %d, want 100", s)
	}

	ca.issue(t, dir, 101, tlsDomain)
	p.Signal(syscall.SIGHUP)
	p.WaitLog("certificate reloaded", 10*time.Second)
	if s := serial(); s != 101 {
		t.Errorf("after SIGHUP serving serial %d, want 101", s)
	}
	// Issue 24.11: the reload's summary names the certificate, not changed=nothing.
	if m := p.WaitLog("configuration reloaded", 10*time.Second); !strings.HasPrefix(fmt.Sprint(m["changed"]), "certificate: ") {
		t.Errorf("after a new certificate the reload says changed=%v", m["changed"])
	}

	tlsWriteFile(t, filepath.Join(dir, "cert.pem"), []byte("not a certificate"))
	time.Sleep(sigtrap.Coalesce) // sooner, the second SIGHUP counts as the same delivery
	p.Signal(syscall.SIGHUP)
	// The reload validates the configuration first, certificate pairs included: the bad
	// pair is reported with file:line:col and nothing changes.
	p.WaitLog("the new configuration is invalid: still serving the running one (drainproxy -check shows the same)", 10*time.Second)
	if s := serial(); s != 101 {
		t.Errorf("after a bad SIGHUP serving serial %d, want the previous 101", s)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// tlsDialRaw opens a never-retrying HTTP/1.1 client connection over TLS (rawConn).
func tlsDialRaw(port int, roots *x509.CertPool) (*rawConn, error) {
	d := &net.Dialer{Timeout: 300 * time.Millisecond}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
		&tls.Config{RootCAs: roots, ServerName: tlsDomain, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReader(c)}, nil
}

// tlsH2Conn opens one HTTP/2 client connection, so that the test sees what that
// connection is told (GOAWAY) instead of a pool hiding it. Only HTTP/2 is offered: a
// server that does not choose it in ALPN fails the dial.
func tlsH2Conn(t testing.TB, port int, roots *x509.CertPool) *http.ClientConn {
	t.Helper()
	var h2Only http.Protocols
	h2Only.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: tlsDomain},
		Protocols:       &h2Only,
	}
	cc, err := tr.NewClientConn(context.Background(), "https", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// A drain over TLS loses nothing: HTTP/2 streams in flight at SIGTERM complete after their
// connection got GOAWAY, new streams on it are refused by the client as GOAWAY says,
// HTTP/1.1-over-TLS keep-alive clients lose no request, and the process exits 0.
func TestTLSDrainInFlight(t *testing.T) {
	up, arrived := drainUpstream(t)
	p, _, tlsPort, ca, _ := tlsStaticProxy(t, up)

	const slowStreams = 3
	cc := tlsH2Conn(t, tlsPort, ca.Pool)
	type result struct {
		status int
		body   string
		err    error
	}
	results := make(chan result, slowStreams)
	for range slowStreams {
		go func() {
			req, _ := http.NewRequest("POST", fmt.Sprintf("https://%s/slow?d=1500ms", tlsDomain), nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{status: resp.StatusCode, body: string(b), err: err}
		}()
	}
	awaitArrivals(t, arrived, slowStreams)

	// HTTP/1.1 over TLS: keep-alive clients sending back to back through the drain.
	var res loadResult
	stop := make(chan struct{})
	dial := func() (*rawConn, error) { return tlsDialRaw(tlsPort, ca.Pool) }
	clients := keepAliveClientsDial(dial, 8, "/", stop, &res)
	waitFor(t, 10*time.Second, func() bool { return res.ok.Load() >= 50 })

	p.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, func() bool { return cc.Available() == 0 }) // GOAWAY received
	// The client honours GOAWAY: no new stream goes out on this connection.
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://%s/", tlsDomain), nil)
	if resp, err := cc.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Errorf("a new stream after GOAWAY got %s; want the client to refuse it", resp.Status)
	}
	for range slowStreams {
		r := <-results
		if r.err != nil || r.status != http.StatusOK || r.body != standin.Hello {
			t.Errorf("HTTP/2 stream in flight at SIGTERM: %d %q %v; want 200 %q", r.status, r.body, r.err, standin.Hello)
		}
	}
	code := p.Wait(15 * time.Second)
	close(stop)
	clients.Wait()
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if res.lost.Load() != 0 || res.bad.Load() != 0 {
		t.Errorf("%d HTTP/1.1-over-TLS requests lost on established connections (first: %v), %d not 200; want 0", res.lost.Load(), res.firstErr.Load(), res.bad.Load())
	}
	sum := p.WaitLog("drain complete", time.Second)
	if d, _ := sum["drained"].(float64); d < slowStreams {
		t.Errorf("drain complete: drained %v, want at least the %d HTTP/2 streams", sum["drained"], slowStreams)
	}
	t.Logf("HTTP/1.1 over TLS: %d ok, %d refused new connections after the listener closed", res.ok.Load(), res.refused.Load())
}

// Streaming works over HTTP/2 through the drain's per-request wrapper: a flushed first
// line reaches the client while the upstream still holds the rest back.
func TestTLSHTTP2StreamsFlush(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/held", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	p, _, tlsPort, ca, _ := tlsStaticProxy(t, "http://"+serveUpstream(t, mux))
	cc := tlsH2Conn(t, tlsPort, ca.Pool)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://%s/held", tlsDomain), nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v; want it before the upstream sends the rest (flushed)", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v; want \"second\\n\"", rest, err)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
