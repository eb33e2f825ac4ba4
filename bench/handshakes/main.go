// Command handshakes measures full TLS handshakes per second against a server on loopback:
// -c workers each dial, complete a TLS 1.3 handshake (no session resumption, X25519 key
// exchange, the certificate not verified) and close, over and over for -d.
//
//	handshakes -addr 127.0.0.1:8443 [-c 32] [-d 10s] [-request]
//
// With -request each connection also sends GET / and reads the answer before it closes. It
// prints "handshakes N errors E seconds S rate R". Only loopback addresses are accepted.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address (loopback only)")
	workers := flag.Int("c", 32, "connections being set up at once")
	d := flag.Duration("d", 10*time.Second, "how long to run (at most 5m)")
	request := flag.Bool("request", false, "send GET / on each connection before closing it")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "handshakes: -addr must be a loopback IP and port, not %q\n", *addr)
		os.Exit(2)
	}
	if *d <= 0 || *d > 5*time.Minute || *workers < 1 {
		fmt.Fprintln(os.Stderr, "handshakes: -d must be between 0 and 5m, -c at least 1")
		os.Exit(2)
	}
	cfg := &tls.Config{
		InsecureSkipVerify: true, // a loopback benchmark against a self-signed certificate
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		NextProtos:         []string{"http/1.1"},
		// No ClientSessionCache: every handshake is a full one.
	}
	var ok, failed atomic.Int64
	var first atomic.Value
	start := time.Now()
	stop := start.Add(*d)
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := once(*addr, cfg, *request); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	fmt.Printf("handshakes %d errors %d seconds %.3f rate %.1f\n", ok.Load(), failed.Load(), secs, float64(ok.Load())/secs)
	if e := first.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "handshakes: first error: %v\n", e)
	}
}

func once(addr string, cfg *tls.Config, request bool) error {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return err
	}
	if !request {
		return nil
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
