package admin

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/drainproxy/drainproxy/drain"
)

// send is do with a Host and extra headers; a body is sent when contentType is set.
func (f *fixture) send(method, path, host string, header ...string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, "http://"+f.srv.Addr()+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if req.Header.Get("Content-Type") != "" {
		req.Body = io.NopCloser(strings.NewReader("x"))
		req.ContentLength = 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A web page cannot drain the process: a cross-site form post (the request a browser sends
// without asking first) is refused, and the drain does not begin. Scripts still can.
func TestDrainRefusesCrossSite(t *testing.T) {
	f := newFixture(t, "")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")

	for _, tt := range []struct {
		name   string
		header []string
		want   int
	}{
		{"form post from another site", []string{"Origin", "http://evil.example", "Content-Type", "text/plain"}, 403},
		{"cross-site fetch, no content type", []string{"Origin", "http://evil.example"}, 403},
		{"Sec-Fetch-Site cross-site", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"Sec-Fetch-Site same-site", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"text/plain without Origin (old browser)", []string{"Content-Type", "text/plain; charset=utf-8"}, 415},
		{"urlencoded form (curl -d)", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415},
		{"multipart form", []string{"Content-Type", "multipart/form-data; boundary=x"}, 415},
		{"bad content type", []string{"Content-Type", "text/plain; ;"}, 415},
	} {
		if code, body := f.send("POST", "/drain", "", tt.header...); code != tt.want {
			t.Errorf("%s: POST /drain = %d %q; want %d", tt.name, code, body, tt.want)
		}
	}
	if code, _ := f.send("POST", "/restart", "", "Origin", "http://evil.example", "Content-Type", "text/plain"); code != 403 {
		t.Errorf("cross-site POST /restart = %d; want 403", code)
	}
	f.waitReadyz(200, "ready\n") // nothing above drained
	if st := f.d.Stats(); st.Phase != drain.PhaseReady {
		t.Fatalf("phase %v after refused drains; want ready", st.Phase)
	}

	// What scripts and the admin's own page send is accepted.
	origin := "http://" + f.srv.Addr()
	if code, body := f.send("POST", "/drain", "", "Origin", origin, "Sec-Fetch-Site", "same-origin", "Content-Type", "application/json"); code != http.StatusAccepted {
		t.Errorf("same-origin POST /drain = %d %q; want 202", code, body)
	}
	f.waitReadyz(503, "draining")
}

// A page that rebinds its own name to 127.0.0.1 reads nothing: the operator endpoints
// answer only a Host that names this listener. Probes answer any Host (kubelet sends the
// pod IP).
func TestHostMustNameTheListener(t *testing.T) {
	f := newFixture(t, "")
	f.upstreamUp()
	f.run()
	f.waitReadyz(200, "ready\n")
	_, port, _ := net.SplitHostPort(f.srv.Addr())

	for _, tt := range []struct {
		method, path, host string
		want               int
	}{
		{"GET", "/status", "evil.example", 403},
		{"GET", "/status", "evil.example:" + port, 403},
		{"GET", "/metrics", "evil.example", 403},
		{"POST", "/drain", "evil.example", 403},
		{"GET", "/status", "10.9.9.9:" + port, 403}, // an address that is not this listener's
		{"GET", "/status", "localhost:" + port, 200},
		{"GET", "/status", "LOCALHOST.", 200},
		{"GET", "/status", "admin.localhost", 200},
		{"GET", "/status", "127.0.0.1:" + port, 200},
		{"GET", "/status", "[::1]:" + port, 200},
		{"GET", "/metrics", "127.0.0.1", 200},
		{"GET", "/healthz", "evil.example", 200},
		{"GET", "/readyz", "evil.example", 200},
		{"GET", "/readyz", "10.1.2.3:" + port, 200},
	} {
		code, body := f.send(tt.method, tt.path, tt.host)
		if code != tt.want {
			t.Errorf("%s %s Host %q = %d %q; want %d", tt.method, tt.path, tt.host, code, body, tt.want)
		}
		if code == 403 && !strings.Contains(body, "allowed_hosts") {
			t.Errorf("403 for Host %q does not say what to configure: %q", tt.host, body)
		}
	}
	f.waitReadyz(200, "ready\n") // the POST with a foreign Host did not drain
}

// Configured names are accepted, others still not.
func TestAllowedHosts(t *testing.T) {
	srv, err := Start(Options{
		Address: "127.0.0.1:0", Drainer: drain.New(drain.Options{}), AllowedHosts: []string{"admin.internal", "10.0.0.7"},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") }),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	for host, want := range map[string]int{"admin.internal:9901": 200, "ADMIN.internal": 200, "10.0.0.7": 200, "admin.internal.evil.example": 403, "internal": 403} {
		req, _ := http.NewRequest("GET", "http://"+srv.Addr()+"/metrics", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("/metrics with Host %q = %d; want %d", host, resp.StatusCode, want)
		}
	}
}

// The host Address names is accepted as Host too.
func TestAddressHostIsAllowed(t *testing.T) {
	srv, err := Start(Options{Address: "localhost:0", Drainer: drain.New(drain.Options{}),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") })})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if !srv.allowed["localhost"] {
		t.Fatalf("allowed = %v; want the listen address's host in it", srv.allowed)
	}
}

// An address in Host is accepted when it is the one the request arrived on: an admin
// listener on 0.0.0.0 is scraped as http://POD_IP:9901/metrics.
func TestHostIsTheLocalAddress(t *testing.T) {
	s := &Server{allowed: map[string]bool{}}
	for _, tt := range []struct {
		local, host string
		want        bool
	}{
		{"10.0.0.5:9901", "10.0.0.5:9901", true},
		{"10.0.0.5:9901", "10.0.0.5", true},
		{"[fd00::5]:9901", "[fd00::5]:9901", true},
		{"10.0.0.5:9901", "10.0.0.6:9901", false},
		{"10.0.0.5:9901", "pod.example:9901", false},
		{"10.0.0.5:9901", "", true}, // HTTP/1.0 without Host: not a browser
	} {
		r := httptest.NewRequest("GET", "/status", nil)
		r.Host = tt.host
		local, _ := net.ResolveTCPAddr("tcp", tt.local)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		if got := s.hostAllowed(r); got != tt.want {
			t.Errorf("Host %q on %s: allowed %v, want %v", tt.host, tt.local, got, tt.want)
		}
	}
}

// The auth scheme is case-insensitive (RFC 9110 section 11.1).
func TestBearerAnyCase(t *testing.T) {
	const token = "0123456789abcdef"
	f := newFixture(t, token)
	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER " + token, "bEaReR  " + token} {
		if code, _ := f.send("GET", "/status", "", "Authorization", auth); code != 200 {
			t.Errorf("Authorization %q = %d; want 200", auth, code)
		}
	}
	for _, auth := range []string{"Basic " + token, "Bearer", "Bearer" + token, token} {
		if code, _ := f.send("GET", "/status", "", "Authorization", auth); code != 401 {
			t.Errorf("Authorization %q = %d; want 401", auth, code)
		}
	}
}
