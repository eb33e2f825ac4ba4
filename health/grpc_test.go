package health

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// serveGRPCHealth serves grpc-go's own health service on ln and returns it.
func serveGRPCHealth(t *testing.T, ln net.Listener) *grpchealth.Server {
	t.Helper()
	hs := grpchealth.NewServer()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return hs
}

// The gRPC health check against grpc-go's health server: SERVING passes, anything
// else fails with a reason that names what the app said.
func TestGRPCHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := serveGRPCHealth(t, ln)
	hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	sock := filepath.Join(t.TempDir(), "grpc.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveGRPCHealth(t, uln) // "" is SERVING by default

	check := func(upstream, service string) error {
		u, _ := url.Parse(upstream)
		c := New(Options{Upstream: u, GRPC: true, GRPCService: service, Timeout: 5 * time.Second})
		return c.CheckNow(context.Background())
	}
	for _, tt := range []struct {
		upstream, service, wantErr string // "" passes
	}{
		{"h2c://" + ln.Addr().String(), "", ""},
		{"h2c://" + ln.Addr().String(), "echo", ""},
		{"http://" + ln.Addr().String(), "echo", ""}, // gRPC is HTTP/2 whatever the scheme says
		{"unix+h2c://" + sock, "", ""},
		{"h2c://" + ln.Addr().String(), "down", `service "down" is NOT_SERVING`},
		{"h2c://" + ln.Addr().String(), "nope", `does not know service "nope"`},
	} {
		err := check(tt.upstream, tt.service)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("check %s service %q: %v; want %q", tt.upstream, tt.service, err, tt.wantErr)
		}
	}

	// An app that is not a gRPC server fails the check, with the reason.
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.NotFoundHandler()}
	go srv.Serve(hln)
	t.Cleanup(func() { srv.Close() })
	if err := check("h2c://"+hln.Addr().String(), ""); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("a plain HTTP/2 app: %v; want a failure naming HTTP 404", err)
	}
}

func TestParseHealthResponse(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      []byte
		want    uint64
		wantErr bool
	}{
		{"serving", []byte{0, 0, 0, 0, 2, 0x08, 1}, 1, false},
		{"default is UNKNOWN", []byte{0, 0, 0, 0, 0}, 0, false},
		{"truncated unknown field", []byte{0, 0, 0, 0, 7, 0x12, 2, 'h', 'i', 0x08, 2, 0x18}, 0, true},
		{"unknown then status", []byte{0, 0, 0, 0, 6, 0x12, 2, 'h', 'i', 0x08, 2}, 2, false},
		{"compressed", []byte{1, 0, 0, 0, 0}, 0, true},
		{"short", []byte{0, 0, 0, 0, 9, 0x08}, 0, true},
		{"no message", nil, 0, true},
	} {
		got, err := parseHealthResponse(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("%s: %d, %v; want %d, error %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}
