// Command idleconns opens many keep-alive connections to a server on loopback, sends one
// request on each, reads the answer and then keeps them all open and idle: what a proxy
// pays for each idle client (bench/mem measures its RSS before and after).
//
//	idleconns -addr 127.0.0.1:8080 -n 10000 [-tls] [-h2] [-hold 60s]
//
// It prints "open N errors E" once every connection has had its answer, then holds them
// until SIGTERM or SIGINT, or until -hold passes, and exits. Only loopback addresses are
// accepted.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server address (loopback only)")
	n := flag.Int("n", 10000, "connections to open")
	parallel := flag.Int("parallel", 50, "connections being opened at once")
	useTLS := flag.Bool("tls", false, "TLS (1.3, certificate not verified: a loopback benchmark)")
	useH2 := flag.Bool("h2", false, "HTTP/2 over TLS instead of HTTP/1.1 (implies -tls)")
	hold := flag.Duration("hold", 60*time.Second, "the longest to keep the connections open")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "idleconns: -addr must be a loopback IP and port, not %q\n", *addr)
		os.Exit(2)
	}
	if *useH2 {
		*useTLS = true
	}
	var (
		mu      sync.Mutex
		conns   []io.Closer
		errs    atomic.Int64
		firstMu sync.Once
		first   error
	)
	fail := func(err error) {
		errs.Add(1)
		firstMu.Do(func() { first = err })
	}
	sem := make(chan struct{}, max(*parallel, 1))
	var wg sync.WaitGroup
	for range *n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := open(*addr, *useTLS, *useH2)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	fmt.Printf("open %d errors %d\n", len(conns), errs.Load())
	if first != nil {
		fmt.Fprintf(os.Stderr, "idleconns: first error: %v\n", first)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(*hold):
	}
	for _, c := range conns {
		c.Close()
	}
}

// h2 makes the HTTP/2 connections: TLS 1.3, h2 only, one connection per NewClientConn.
var h2 = func() *http.Transport {
	t := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP2(true)
	return t
}()

// open dials addr, sends GET / and reads the answer, and returns the open connection.
func open(addr string, useTLS, useH2 bool) (io.Closer, error) {
	if useH2 {
		return openH2(addr)
	}
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	conn := raw
	if useTLS {
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// openH2 opens an HTTP/2 connection of its own, runs one request over it and keeps it.
func openH2(addr string) (io.Closer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := h2.NewClientConn(ctx, "https", addr)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		cc.Close()
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		cc.Close()
		return nil, fmt.Errorf("status %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
	return cc, nil
}
