// Command grpcload measures gRPC unary throughput and latency: a load client for bench/,
// and the echo server it loads (google.golang.org/grpc's interop TestService over h2c,
// with the gRPC health service).
//
//	grpcload -serve 127.0.0.1:50051
//	grpcload -target 127.0.0.1:8080 -conns 4 -c 64 -d 10s -size 100
//
// The client opens -conns HTTP/2 connections and runs -c goroutines spread over them,
// each calling UnaryCall back to back with a -size byte payload for -d (after a 1s
// warm-up that is not counted), then prints one line: RPCs/s, p50, p99, errors.
// It only dials the address it is given; point it at 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type echo struct {
	testpb.UnimplementedTestServiceServer
}

func (echo) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func main() {
	serve := flag.String("serve", "", "serve the echo service on `ADDR` (h2c) instead of loading")
	target := flag.String("target", "", "load the echo service at `ADDR` (h2c)")
	conns := flag.Int("conns", 4, "HTTP/2 connections")
	conc := flag.Int("c", 64, "concurrent callers, spread over the connections")
	dur := flag.Duration("d", 10*time.Second, "measured duration")
	size := flag.Int("size", 100, "payload bytes per call")
	label := flag.String("label", "", "name printed at the start of the result line")
	flag.Parse()
	switch {
	case *serve != "":
		ln, err := net.Listen("tcp", *serve)
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(1)
		}
		srv := grpc.NewServer()
		testpb.RegisterTestServiceServer(srv, echo{})
		hs := health.NewServer() // "" and grpc.testing.TestService: SERVING
		hs.SetServingStatus(testpb.TestService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(srv, hs)
		fmt.Fprintln(os.Stderr, "grpcload: serving on", ln.Addr())
		if err := srv.Serve(ln); err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(1)
		}
	case *target != "":
		if err := load(*label, *target, *conns, *conc, *dur, *size); err != nil {
			fmt.Fprintln(os.Stderr, "grpcload:", err)
			os.Exit(1)
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func load(label, target string, conns, conc int, dur time.Duration, size int) error {
	clients := make([]testpb.TestServiceClient, conns)
	for i := range clients {
		cc, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		clients[i] = testpb.NewTestServiceClient(cc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = clients[i].UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return fmt.Errorf("first call to %s: %w", target, err)
		}
	}
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, size)}}
	warmEnd := time.Now().Add(time.Second)
	end := warmEnd.Add(dur)
	var errs atomic.Int64
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	for g := range conc {
		wg.Go(func() {
			c := clients[g%conns]
			for {
				start := time.Now()
				if start.After(end) {
					return
				}
				_, err := c.UnaryCall(context.Background(), req)
				if start.Before(warmEnd) {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				lat[g] = append(lat[g], time.Since(start))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return fmt.Errorf("no call succeeded (%d errors)", errs.Load())
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	fmt.Printf("%s\tconns=%d c=%d size=%d\tRPC/s=%.0f\tp50_ms=%.2f\tp99_ms=%.2f\terrors=%d\n",
		label, conns, conc, size, float64(len(all))/dur.Seconds(), pct(0.50), pct(0.99), errs.Load())
	return nil
}
