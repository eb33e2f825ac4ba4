package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzWriteHead is the inline client's request writer against (*http.Request).Write, the
// oracle: the same bodiless GET, HEAD or OPTIONS, built from fuzzed parts, must give the
// same request line and the same header fields with each field's values in the same
// order, or fail as Request.Write fails. Deliberate differences: writeHead writes fields
// in map order (Request.Write sorts them), which HTTP allows.
func FuzzWriteHead(f *testing.F) {
	f.Add(uint8(0), "/a/b?c=d", "", "example.com", "X-A", "1", "x-a", "2", "Accept", "*/*")
	f.Add(uint8(1), "/%2e%2e/x", "/../x", "example.com:8080", "User-Agent", "", "Via", "1.1 a\r\nb", "X-Empty", "")
	f.Add(uint8(2), "*", "", "[::1]:80", "User-Agent", " agent ", "Bad Name", "v", "Connection", "keep-alive")
	f.Add(uint8(0), "/ü", "", "bücher.example", "X-A", "v\x00w", "Host", "evil", "Content-Length", "5")
	f.Add(uint8(1), "/p", "", "[fe80::1%25eth0]:80", "Transfer-Encoding", "chunked", "Trailer", "X", "X-B", "\tt\t")
	f.Add(uint8(2), "/q\x7f", "", "h", "K", "v", "K", "w", "k", "x")
	f.Fuzz(func(t *testing.T, m uint8, path, rawPath, host, k1, v1, k2, v2, k3, v3 string) {
		method := []string{http.MethodGet, http.MethodHead, http.MethodOptions}[int(m)%3]
		u := &url.URL{Scheme: "http", Host: "upstream", Path: path, RawPath: rawPath}
		if i := strings.IndexByte(path, '?'); i >= 0 {
			u.Path, u.RawQuery = path[:i], path[i+1:]
		}
		if path == "*" {
			u = &url.URL{Scheme: "http", Host: "upstream", Opaque: "*"}
		}
		h := http.Header{}
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}, {k3, v3}} {
			h[kv[0]] = append(h[kv[0]], kv[1])
		}
		mk := func() *http.Request {
			hc := http.Header{}
			for k, vs := range h {
				hc[k] = slices.Clone(vs)
			}
			return &http.Request{Method: method, URL: u, Host: host, Header: hc, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		}
		var want, got bytes.Buffer
		werr := mk().Write(&want)
		bw := bufio.NewWriter(&got)
		gerr := writeHead(bw, mk())
		if gerr == nil {
			gerr = bw.Flush()
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("Request.Write: %v; writeHead: %v\nwant %q\ngot  %q", werr, gerr, want.String(), got.String())
		}
		if werr != nil {
			return
		}
		wl, wf := splitHead(t, want.Bytes())
		gl, gf := splitHead(t, got.Bytes())
		if wl != gl {
			t.Fatalf("request line %q, Request.Write %q", gl, wl)
		}
		if len(wf) != len(gf) {
			t.Fatalf("fields %q, Request.Write %q", gf, wf)
		}
		for k, vs := range wf {
			if !slices.Equal(vs, gf[k]) {
				t.Fatalf("field %q: %q, Request.Write %q\nwant %q\ngot  %q", k, gf[k], vs, want.String(), got.String())
			}
		}
	})
}

// splitHead splits a request head into its request line and its fields, each name with
// its values in the order written.
func splitHead(t *testing.T, head []byte) (string, map[string][]string) {
	s := string(head)
	if !strings.HasSuffix(s, "\r\n\r\n") {
		t.Fatalf("head does not end with an empty line: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\r\n\r\n"), "\r\n")
	fields := map[string][]string{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("field line without a colon: %q in %q", l, s)
		}
		fields[k] = append(fields[k], v)
	}
	return lines[0], fields
}
