package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

// TestWriteHeadMatchesRequestWrite checks the inline path's request writer against
// Request.Write: what an upstream parses from either must be the same request.
func TestWriteHeadMatchesRequestWrite(t *testing.T) {
	type tc struct {
		name   string
		method string
		url    string
		host   string
		header http.Header
	}
	for _, c := range []tc{
		{"plain GET", "GET", "http://127.0.0.1:8080/a/b?x=1&y=%20", "", http.Header{"User-Agent": {""}}},
		{"client host kept", "GET", "http://127.0.0.1:8080/", "example.com:443", http.Header{"Accept": {"*/*"}}},
		{"no user agent: Go's", "HEAD", "http://127.0.0.1:8080/", "", http.Header{}},
		{"a user agent", "GET", "http://127.0.0.1:8080/", "", http.Header{"User-Agent": {"curl/8", "second"}}},
		{"OPTIONS", "OPTIONS", "http://127.0.0.1:8080/*", "", http.Header{}},
		{"repeated values keep their order", "GET", "http://127.0.0.1:8080/", "", http.Header{
			"X-Forwarded-For": {"10.0.0.1", "10.0.0.2"}, "Cookie": {"a=1", "b=2"}, "X-Request-Id": {"abc"}}},
		{"line breaks in a value become spaces", "GET", "http://127.0.0.1:8080/", "", http.Header{"X-Bad": {"a\r\nInjected: yes"}}},
		{"values are trimmed", "GET", "http://127.0.0.1:8080/", "", http.Header{"X-Pad": {"  v \t"}}},
		{"invalid field names are dropped", "GET", "http://127.0.0.1:8080/", "", http.Header{"Bad Name": {"x"}, "Ok": {"y"}}},
		{"excluded fields are not copied", "GET", "http://127.0.0.1:8080/", "", http.Header{
			"Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}, "Host": {"evil"}}},
		{"IPv6 with a zone goes through Request.Write", "GET", "http://[fe80::1%25eth0]:80/", "", http.Header{}},
		{"IDNA host goes through Request.Write", "GET", "http://127.0.0.1/", "bücher.example", http.Header{}},
		{"invalid host goes through Request.Write", "GET", "http://127.0.0.1/", "a b", http.Header{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			build := func() *http.Request {
				u, err := url.Parse(c.url)
				if err != nil {
					t.Fatal(err)
				}
				return &http.Request{Method: c.method, URL: u, Host: c.host, Header: c.header.Clone(),
					Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
			}
			var want, got bytes.Buffer
			if err := build().Write(&want); err != nil {
				t.Fatal(err)
			}
			bw := bufio.NewWriter(&got)
			if err := writeHead(bw, build()); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			parse := func(b []byte) *http.Request {
				r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
				if err != nil {
					t.Fatalf("parse %q: %v", b, err)
				}
				return r
			}
			w, g := parse(want.Bytes()), parse(got.Bytes())
			if w.Method != g.Method || w.RequestURI != g.RequestURI || w.Host != g.Host ||
				w.ContentLength != g.ContentLength || !reflect.DeepEqual(w.Header, g.Header) {
				t.Errorf("writeHead wrote\n%q\nRequest.Write wrote\n%q", got.String(), want.String())
			}
		})
	}
}

func TestWriteHeadRefusesControlCharacters(t *testing.T) {
	r := &http.Request{Method: "GET", URL: &url.URL{Scheme: "http", Host: "127.0.0.1", Path: "/a", RawQuery: "b\x00"}, Header: http.Header{}}
	var buf bytes.Buffer
	if err := r.Write(&buf); err == nil {
		t.Fatal("Request.Write accepted a control character: the test's premise is wrong")
	}
	if err := writeHead(bufio.NewWriter(&buf), r); err == nil {
		t.Fatal("writeHead wrote a request URL with a control character")
	}
}

// BenchmarkWriteHead is the inline path's request head, against Request.Write.
func BenchmarkWriteHead(b *testing.B) {
	u, _ := url.Parse("http://127.0.0.1:8080/some/path?q=1")
	r := &http.Request{Method: "GET", URL: u, Host: "example.com", Header: http.Header{
		"User-Agent": {"wrk"}, "Accept": {"*/*"}, "X-Forwarded-For": {"127.0.0.1"},
		"X-Forwarded-Host": {"example.com"}, "X-Forwarded-Proto": {"http"}, "X-Request-Id": {"0123456789abcdef0123456789abcdef"}}}
	bw := bufio.NewWriter(discard{})
	b.Run("writeHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeHead(bw, r)
			bw.Flush()
		}
	})
	b.Run("Request.Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Write(bw)
			bw.Flush()
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
