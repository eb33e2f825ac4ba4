package main

// gRPC through drainproxy, with google.golang.org/grpc's own client and server (its
// interop TestService and health service, so no protoc is needed): unary, server- and
// bidirectional streaming, status and trailers, the health protocol, errors drainproxy
// answers itself, and a drain under load.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// echoService is the upstream app: UnaryCall echoes the payload (or answers the status
// asked for), StreamingOutputCall sends one message per response parameter after its
// interval, FullDuplexCall answers each message as it comes.
type echoService struct {
	testpb.UnimplementedTestServiceServer
	// gate, when a stream asks for it (metadata "gate"), holds its messages after the
	// first until the test lets them go: proof that the first was not buffered.
	gate chan struct{}
}

func (s *echoService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if st := req.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (s *echoService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	for i, p := range req.GetResponseParameters() {
		if i == 1 && len(md.Get("gate")) > 0 {
			select {
			case <-s.gate:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
		time.Sleep(time.Duration(p.GetIntervalUs()) * time.Microsecond)
		body := bytes.Repeat([]byte{byte('a' + i%26)}, int(p.GetSize()))
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *echoService) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// startGRPCUpstream serves the echo and health services over h2c on a fresh port.
func startGRPCUpstream(t testing.TB) (addr string, svc *echoService, srv *grpc.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc, srv = serveGRPCUpstream(t, ln)
	return ln.Addr().String(), svc, srv
}

// serveGRPCUpstream serves the echo and health services over h2c on ln.
func serveGRPCUpstream(t testing.TB, ln net.Listener) (svc *echoService, srv *grpc.Server) {
	t.Helper()
	svc = &echoService{gate: make(chan struct{})}
	srv = grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, svc)
	hs := health.NewServer()
	hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return svc, srv
}

// grpcDial connects to drainproxy at addr: h2c, or TLS against roots.
func grpcDial(t testing.TB, addr string, tlsConf *tls.Config, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, append(opts, grpc.WithTransportCredentials(creds))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestGRPCThroughProxy(t *testing.T) {
	upstream, svc, _ := startGRPCUpstream(t)
	t.Run("h2c", func(t *testing.T) {
		p := startProxy(t, "-upstream", "h2c://"+upstream)
		checkGRPC(t, grpcDial(t, p.Addr, nil), svc)
	})
	t.Run("tls", func(t *testing.T) {
		_, _, tlsPort, ca, _ := tlsStaticProxy(t, "h2c://"+upstream)
		conf := &tls.Config{RootCAs: ca.Pool, ServerName: tlsDomain}
		checkGRPC(t, grpcDial(t, fmt.Sprintf("127.0.0.1:%d", tlsPort), conf), svc)
	})
}

func checkGRPC(t *testing.T, cc *grpc.ClientConn, svc *echoService) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := testpb.NewTestServiceClient(cc)

	res, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}})
	if err != nil || string(res.GetPayload().GetBody()) != "hello" {
		t.Fatalf("unary: %v, payload %q; want hello", err, res.GetPayload().GetBody())
	}

	// The app's status and message (in trailers) reach the client as the app sent them.
	_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.PermissionDenied), Message: "no entry – 100%"}})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "no entry – 100%" {
		t.Errorf("app status: got %v %q; want PermissionDenied %q", st.Code(), st.Message(), "no entry – 100%")
	}

	// Server streaming: the first message arrives while the app holds back the rest.
	sctx := metadata.AppendToOutgoingContext(ctx, "gate", "1")
	params := make([]*testpb.ResponseParameters, 5)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: 1000}
	}
	stream, err := client.StreamingOutputCall(sctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || len(m.GetPayload().GetBody()) != 1000 {
		t.Fatalf("first streamed message: %v (held back by the proxy?)", err)
	}
	svc.gate <- struct{}{}
	n := 1
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stream after %d messages: %v", n, err)
		}
		n++
	}
	if n != len(params) {
		t.Errorf("got %d streamed messages; want %d", n, len(params))
	}

	// Both ways: each answer comes before the next request is sent.
	duplex, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		want := fmt.Sprintf("ping %d", i)
		if err := duplex.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(want)}}); err != nil {
			t.Fatal(err)
		}
		m, err := duplex.Recv()
		if err != nil || string(m.GetPayload().GetBody()) != want {
			t.Fatalf("duplex %d: %v, %q", i, err, m.GetPayload().GetBody())
		}
	}
	duplex.CloseSend()
	if _, err := duplex.Recv(); err != io.EOF {
		t.Errorf("duplex end: %v; want EOF", err)
	}

	// The health protocol, through the proxy.
	hres, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "echo"})
	if err != nil || hres.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v %v; want SERVING", hres.GetStatus(), err)
	}
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("health check of an unknown service: %v; want NotFound", err)
	}
}

// When the app is gone, the client gets UNAVAILABLE with drainproxy's reason, not
// "unexpected HTTP status code".
func TestGRPCUpstreamDownIsUnavailable(t *testing.T) {
	upstream, _, srv := startGRPCUpstream(t)
	p := startProxy(t, "-upstream", "h2c://"+upstream)
	client := testpb.NewTestServiceClient(grpcDial(t, p.Addr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "drainproxy: the upstream") {
		t.Errorf("app down: %v %q; want Unavailable with drainproxy's reason", st.Code(), st.Message())
	}
}

// drainproxy honours grpc-timeout: an app that ignores it is cut off at the deadline and
// the client is answered DEADLINE_EXCEEDED in trailers-only form, by drainproxy.
func TestGRPCTimeoutHonoured(t *testing.T) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan http.Header, 1)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // an app that never answers by itself
		released <- r.Header
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := startProxy(t, "-upstream", "h2c://"+ln.Addr().String())

	tr := &http.Transport{Protocols: &protos} // h2c with prior knowledge, as gRPC clients
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "http://"+p.Addr+"/grpc.testing.TestService/UnaryCall", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", "200m")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/grpc" ||
		res.Header.Get("Grpc-Status") != "4" || len(body) != 0 {
		t.Errorf("got %d %v body %q; want 200, application/grpc, grpc-status 4 in the headers", res.StatusCode, res.Header, body)
	}
	select {
	case h := <-released:
		// The app got the call as the client sent it: TE: trailers kept (gRPC servers
		// may refuse a call without it), the deadline passed on.
		if h.Get("Te") != "trailers" || h.Get("Grpc-Timeout") == "" {
			t.Errorf("the app saw TE %q and grpc-timeout %q; want trailers and the client's deadline", h.Get("Te"), h.Get("Grpc-Timeout"))
		}
	case <-time.After(10 * time.Second):
		t.Error("the upstream request was not canceled at the deadline")
	}
}

// A drain under gRPC load loses nothing: many RPCs on a few connections, SIGTERM in the
// middle, with and without a drain delay. Every RPC the proxy accepted succeeds (RPCs
// refused once the listener closed are counted apart), slow server-streaming RPCs in
// flight at the signal complete, and the exit code is 0.
func TestGRPCDrainUnderLoad(t *testing.T) {
	upstream, _, _ := startGRPCUpstream(t)
	runs := []struct {
		delay string
		tls   bool
	}{{"0s", false}, {"300ms", false}, {"0s", false}, {"300ms", false}, {"0s", false}, {"300ms", false}, {"0s", true}, {"300ms", true}}
	for i, r := range runs {
		name := map[bool]string{false: "h2c", true: "tls"}[r.tls]
		t.Run(fmt.Sprintf("run%d-%s-delay%s", i+1, name, r.delay), func(t *testing.T) {
			grpcDrainRun(t, upstream, r.delay, r.tls)
		})
	}
}

func grpcDrainRun(t *testing.T, upstream, delay string, overTLS bool) {
	args := []string{"-drain-delay", delay, "-grace", "20s"}
	var p *proc
	addr, conf := "", (*tls.Config)(nil)
	if overTLS {
		var tlsPort int
		var ca *tlsCA
		p, _, tlsPort, ca, _ = tlsStaticProxy(t, "h2c://"+upstream, args...)
		addr, conf = fmt.Sprintf("127.0.0.1:%d", tlsPort), &tls.Config{RootCAs: ca.Pool, ServerName: tlsDomain}
	} else {
		p = startProxy(t, append([]string{"-upstream", "h2c://" + upstream}, args...)...)
		addr = p.Addr
	}
	grpcDrainLoad(t, p, grpcLoad{addr: addr, tls: conf, label: "delay " + delay,
		slowMessages: 10, slowInterval: 100 * time.Millisecond, timeout: 30 * time.Second, moved: delay != "0s"})
}

// grpcLoad shapes grpcDrainLoad's run.
type grpcLoad struct {
	addr  string      // drainproxy's listener
	tls   *tls.Config // nil: h2c
	label string      // names the run in the log line
	// dial connects to addr (nil: a plain net.Dialer); it must fail with an error
	// saying "connection refused" when nothing listens.
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// The slow server-streaming RPCs, in flight at the signal: slowMessages messages
	// slowInterval apart.
	slowMessages int
	slowInterval time.Duration
	// after is how long the load goes on once the listener stopped accepting: long
	// enough for the clients to see the last GOAWAY and try to reconnect.
	after   time.Duration
	timeout time.Duration // bounds the whole run: RPCs, the drain, the exit
	// moved: a drain delay long enough for every client to see the GOAWAY at drain
	// start and move to a new connection (a pod's clients leave while it is still
	// in the endpoints); each must have reconnected after the signal.
	moved bool
}

// retryCounter watches each RPC attempt. grpc-go retries an attempt by itself, on
// another connection, when the server did not process it (a GOAWAY with a last stream id
// below it, or REFUSED_STREAM) or when it never left (its connection had just been told
// to go away when it was about to open the stream: a race inside the client, harmless).
// sentFailed counts the first kind: attempts whose stream was opened on the connection
// (grpc-go reports OutHeader only then) that ended in an error. A graceful drain refuses
// no stream the client sent, so that must stay 0; a refused stream would otherwise hide
// as a "connection refused" (no listener for the retry) or as a success (a new one).
type retryCounter struct {
	retried    atomic.Int64 // transparent retries of either kind
	sentFailed atomic.Int64 // attempts sent on a connection that ended in an error
}

type attemptKey struct{}

func (r *retryCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, attemptKey{}, new(atomic.Bool)) // once per attempt
}

func (r *retryCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	sent, _ := ctx.Value(attemptKey{}).(*atomic.Bool)
	switch s := s.(type) {
	case *stats.Begin:
		if s.IsTransparentRetryAttempt {
			r.retried.Add(1)
		}
	case *stats.OutHeader:
		if sent != nil {
			sent.Store(true)
		}
	case *stats.End:
		if s.Error != nil && sent != nil && sent.Load() {
			r.sentFailed.Add(1)
		}
	}
}

func (r *retryCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (r *retryCounter) HandleConn(context.Context, stats.ConnStats) {}

// grpcDrainLoad runs many unary RPCs on a few connections and a few slow streaming ones
// through p, sends SIGTERM mid-run, and fails t unless every RPC the proxy accepted
// succeeded, every slow one completed, and p exited 0.
func grpcDrainLoad(t *testing.T, p *proc, l grpcLoad) {
	t.Helper()
	const conns, perConn, slow = 4, 8, 4
	clients := make([]testpb.TestServiceClient, conns)
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	// Connections made, counted from the signal on: a connection told to go away as soon
	// as it opens would make its client reconnect over and over during the delay.
	var signalled atomic.Bool
	var redials atomic.Int64
	dial := l.dial
	if dial == nil {
		dial = func(ctx context.Context, a string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", a)
		}
	}
	dialer := grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
		c, err := dial(ctx, a)
		if err == nil && signalled.Load() {
			redials.Add(1)
		}
		return c, err
	})
	var retries retryCounter
	for i := range clients {
		clients[i] = testpb.NewTestServiceClient(grpcDial(t, l.addr, l.tls, dialer, grpc.WithStatsHandler(&retries)))
		if _, err := clients[i].UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	var ok, refused, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	const warmUp = 200 // RPCs done before the signal, so that it lands mid-run
	running := make(chan struct{})
	var load sync.WaitGroup
	for c := range conns {
		for g := range perConn {
			load.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					want := fmt.Sprintf("%d-%d-%d", c, g, n)
					res, err := clients[c].UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(want)}})
					switch {
					case err == nil && string(res.GetPayload().GetBody()) == want:
						if ok.Add(1) == warmUp {
							close(running)
						}
					case err != nil && status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "connection refused"):
						refused.Add(1) // the listener had closed: never reached the proxy
					default:
						failed.Add(1)
						if err == nil {
							err = fmt.Errorf("answer %q for %q", res.GetPayload().GetBody(), want)
						}
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
			})
		}
	}
	// Slow server-streaming RPCs, in flight at the signal.
	slowDone := make(chan error, slow)
	params := make([]*testpb.ResponseParameters, l.slowMessages)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: 100, IntervalUs: int32(l.slowInterval / time.Microsecond)}
	}
	var started sync.WaitGroup
	for i := range slow {
		started.Add(1)
		go func() {
			stream, err := clients[i%conns].StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
			if err != nil {
				started.Done()
				slowDone <- err
				return
			}
			n := 0
			for {
				_, err := stream.Recv()
				if n == 0 {
					started.Done()
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					slowDone <- fmt.Errorf("after %d messages: %w", n, err)
					return
				}
				n++
			}
			if n != len(params) {
				slowDone <- fmt.Errorf("got %d messages; want %d", n, len(params))
				return
			}
			slowDone <- nil
		}()
	}
	started.Wait()
	select {
	case <-running:
	case <-ctx.Done():
		t.Fatalf("only %d RPCs done before the deadline (%d failed: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	signalled.Store(true)
	p.Signal(syscall.SIGTERM)
	p.WaitLog("stopped accepting", l.timeout)
	time.Sleep(l.after) // the load goes on: what clients do once the listener is closed
	close(stop)
	load.Wait()
	for range slow {
		if err := <-slowDone; err != nil {
			t.Errorf("slow streaming RPC: %v", err)
		}
	}
	if code := p.Wait(l.timeout); code != 0 {
		t.Errorf("exit code %d; want 0", code)
	}
	t.Logf("%s: %d RPCs ok, %d refused after the listener closed, %d failed, %d sent attempts failed, %d retried by grpc-go; %d slow streams of %d messages; %d connections made after the signal",
		l.label, ok.Load(), refused.Load(), failed.Load(), retries.sentFailed.Load(), retries.retried.Load(), slow, l.slowMessages, redials.Load())
	// Each client reconnects once after the GOAWAY at the signal; that connection is
	// served until the listener stops accepting.
	if n := redials.Load(); n > 2*conns {
		t.Errorf("%d connections made after the signal by %d clients; want at most %d (a reconnect storm)", n, conns, 2*conns)
	}
	if n := redials.Load(); l.moved && n < conns {
		t.Errorf("%d connections made after the signal by %d clients; want each to reconnect (a GOAWAY at drain start)", n, conns)
	}
	if failed.Load() != 0 {
		t.Errorf("%d RPCs failed; first: %v", failed.Load(), firstErr.Load())
	}
	if n := retries.sentFailed.Load(); n != 0 {
		t.Errorf("%d RPC attempts sent on a connection ended in an error (%d retried by grpc-go); want 0: the drain refused streams the client sent", n, retries.retried.Load())
	}
	if ok.Load() == 0 {
		t.Error("no RPC succeeded: the load did not run")
	}
}

// A server-streaming RPC counts as in flight until it ends: one longer than the grace
// period is cut at the deadline, counted aborted, and the exit code is 1. The client
// sees UNAVAILABLE (its connection closed), which it may retry elsewhere.
func TestGRPCStreamCutAtGraceDeadline(t *testing.T) {
	upstream, _, _ := startGRPCUpstream(t)
	p := startProxy(t, "-upstream", "h2c://"+upstream, "-grace", "1s")
	client := testpb.NewTestServiceClient(grpcDial(t, p.Addr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := make([]*testpb.ResponseParameters, 100)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: 10, IntervalUs: 100_000} // 10s in all
	}
	stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	n := 1
	for {
		_, err = stream.Recv()
		if err != nil {
			break
		}
		n++
	}
	if n >= len(params) || status.Code(err) != codes.Unavailable {
		t.Errorf("stream ended after %d of %d messages with %v; want it cut at the deadline, UNAVAILABLE", n, len(params), err)
	}
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Errorf("exit code %d; want 1 (a stream was aborted)", code)
	}
	if m := p.FindLog("drain complete", time.Second); m == nil || m["aborted"] != float64(1) {
		t.Errorf("drain summary %v; want aborted=1", m)
	}
}

// A gRPC message over limits.max_request_body_bytes is answered RESOURCE_EXHAUSTED by
// drainproxy; smaller ones pass.
func TestGRPCBodyLimitIsResourceExhausted(t *testing.T) {
	upstream, _, _ := startGRPCUpstream(t)
	conf := tlsConfigFile(t, `
upstream { url = "h2c://%s" }
limits { max_request_body_bytes = 1000 }
`, upstream)
	p := startProxy(t, "-config", conf, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0")
	client := testpb.NewTestServiceClient(grpcDial(t, p.Addr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}}); err != nil {
		t.Fatalf("a small message: %v", err)
	}
	_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 5000)}})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "drainproxy") {
		t.Errorf("a message over the limit: %v %q; want ResourceExhausted from drainproxy", st.Code(), st.Message())
	}
}

// h2c = false: the plain listener speaks HTTP/1.1 only, and a gRPC client cannot connect.
func TestListenerH2COff(t *testing.T) {
	upstream, _, _ := startGRPCUpstream(t)
	conf := tlsConfigFile(t, `
listener {
  address = "127.0.0.1:0"
  h2c     = false
}
upstream { url = "h2c://%s" }
admin { address = "127.0.0.1:0" }
`, upstream)
	p := startProxy(t, "-config", conf)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := testpb.NewTestServiceClient(grpcDial(t, p.Addr, nil)).UnaryCall(ctx, &testpb.SimpleRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a gRPC call to a listener with h2c off: %v; want Unavailable (no HTTP/2)", err)
	}
	res, err := http.Get(p.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 1 {
		t.Errorf("HTTP/1.1 client served over %s", res.Proto)
	}
}

// An app that goes away in the middle of a streaming response: the client is told
// UNAVAILABLE by drainproxy (in trailers after the messages it got), as for a refused
// call, not an INTERNAL stream reset.
func TestGRPCUpstreamGoneMidStream(t *testing.T) {
	upstream, _, srv := startGRPCUpstream(t)
	p := startProxy(t, "-upstream", "h2c://"+upstream)
	client := testpb.NewTestServiceClient(grpcDial(t, p.Addr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx := metadata.AppendToOutgoingContext(ctx, "gate", "1") // the app holds message 2
	params := []*testpb.ResponseParameters{{Size: 10}, {Size: 10}}
	stream, err := client.StreamingOutputCall(sctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	srv.Stop() // closes the app's connections, the stream with them
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "drainproxy") {
		t.Errorf("app gone mid-stream: %v %q; want Unavailable from drainproxy", st.Code(), st.Message())
	}
}

var grpcAppBuilt struct {
	once sync.Once
	path string
	err  error
}

// grpcApp builds bench/grpcload (whose -serve mode is a gRPC echo app with the health
// service) once, next to the drainproxy binary.
func grpcApp(t *testing.T) string {
	t.Helper()
	grpcAppBuilt.once.Do(func() {
		grpcAppBuilt.path = filepath.Join(filepath.Dir(binary), "grpcload")
		if b, err := exec.Command("go", "build", "-o", grpcAppBuilt.path, "../../bench/grpcload").CombinedOutput(); err != nil {
			grpcAppBuilt.err = fmt.Errorf("build bench/grpcload: %v\n%s", err, b)
		}
	})
	if grpcAppBuilt.err != nil {
		t.Fatal(grpcAppBuilt.err)
	}
	return grpcAppBuilt.path
}

// Supervised mode with the gRPC health check: drainproxy is ready once the app's health
// service says SERVING, and an app that never does is reported by what it answered.
func TestGRPCSupervisedHealthGate(t *testing.T) {
	app := grpcApp(t)
	config := func(service, startTimeout string) []string {
		port := supPort(t)
		path := filepath.Join(t.TempDir(), "config.hcl")
		body := fmt.Sprintf(`
upstream { url = "h2c://127.0.0.1:%s" }
health_check {
  grpc    = true
  service = %q
}
app { start_timeout = %q }
`, port, service, startTimeout)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"-config", path, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-access-log", "off",
			"--", app, "-serve", "127.0.0.1:{port}"}
	}

	p := startProxy(t, config("grpc.testing.TestService", "20s")...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := testpb.NewTestServiceClient(grpcDial(t, p.Addr, nil)).UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
	if err != nil || string(res.GetPayload().GetBody()) != "hi" {
		t.Fatalf("through the supervised gRPC app: %v", err)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d; want 0", code)
	}

	// The app runs and answers, but not SERVING for that service: /readyz says why.
	bad := launch(t, config("no.such.Service", "30s")...)
	bad.WaitLog("drainproxy starting", 10*time.Second)
	want := `does not know service "no.such.Service"`
	var body string
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(body, want); {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz says %q; want it to name the gRPC answer (%s)", body, want)
		}
		res, err := http.Get("http://" + bad.Admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d %q while the app is not SERVING; want 503", res.StatusCode, b)
		}
		body = string(b)
		time.Sleep(20 * time.Millisecond) // between polls of /readyz
	}
	bad.Signal(syscall.SIGTERM)
	bad.Wait(20 * time.Second)
}
