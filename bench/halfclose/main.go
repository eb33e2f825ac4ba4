// Command halfclose sends N requests from clients that half-close after the request
// (shutdown(SHUT_WR), as nc -N does) and counts what came back: the app's answer, another
// answer, or none. Loopback or a namespace only; see scripts/halfclose.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "drainproxy's address")
	path := flag.String("path", "/", "request target")
	method := flag.String("method", "GET", "GET or POST (with a 3-byte body)")
	proto := flag.String("proto", "HTTP/1.1", "HTTP/1.1 or HTTP/1.0")
	want := flag.String("want", "Hello, world\n", "the app's body")
	n := flag.Int("n", 50, "requests, one connection each")
	flag.Parse()
	counts := map[string]int{}
	for range *n {
		counts[once(*addr, *method, *path, *proto, *want)]++
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%4d  %s\n", counts[k], k)
	}
}

func once(addr, method, path, proto, want string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "halfclose:", err)
		os.Exit(1)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	body := ""
	req := fmt.Sprintf("%s %s %s\r\nHost: example.com\r\n", method, path, proto)
	if method == "POST" {
		body = "x=1"
		req += fmt.Sprintf("Content-Length: %d\r\n", len(body))
	}
	if _, err := io.WriteString(c, req+"\r\n"+body); err != nil {
		return "write failed: " + err.Error()
	}
	c.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		return "no response (" + strings.TrimPrefix(err.Error(), "unexpected ") + ")"
	}
	got, err := io.ReadAll(resp.Body)
	if err == nil && string(got) == want {
		return resp.Status + ", the app's body"
	}
	return fmt.Sprintf("%s, body %q (%v)", resp.Status, got, err)
}
