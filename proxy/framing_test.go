package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

func TestReusableHead(t *testing.T) {
	for _, tc := range []struct {
		head   string
		method string
		want   bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", true},
		{"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", "GET", true},
		{"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", true},
		{"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "GET", true},
		{"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", true},
		{"HTTP/1.1 204 No Content\r\n\r\n", "GET", true},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", "GET", true},
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "HEAD", true},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", "GET", true},

		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", false},
		{"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", false},
		{"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", false},
		{"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "HEAD", false},
		{"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nX Broken: a\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nX-Broken\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", "GET", false}, // incomplete
	} {
		if got, why := reusableHead([]byte(tc.head), tc.method); got != tc.want {
			t.Errorf("%s %q: reusable %v (%s), want %v", tc.method, tc.head, got, why, tc.want)
		}
	}
}

// FuzzReusableHead holds the framing check to net/http's parser: whatever the check calls
// plain, http.ReadResponse frames the same way, so both agree where the response ends.
func FuzzReusableHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		fr, why := finalFraming(raw, method)
		if why != "" {
			return
		}
		br := bufio.NewReader(bytes.NewReader(raw))
		var res *http.Response
		for {
			var err error
			if res, err = http.ReadResponse(br, &http.Request{Method: method}); err != nil {
				return // refused: a 502, never reused
			}
			if res.StatusCode < 100 || res.StatusCode > 199 || res.StatusCode == 101 {
				break
			}
		}
		if res.StatusCode != fr.status {
			t.Fatalf("status: check %d, net/http %d", fr.status, res.StatusCode)
		}
		switch {
		case fr.noBody:
			if res.Body != http.NoBody {
				t.Fatalf("check: no body; net/http reads one (length %d)", res.ContentLength)
			}
		case fr.chunked:
			if len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" {
				t.Fatalf("check: chunked; net/http: %q, length %d", res.TransferEncoding, res.ContentLength)
			}
		case fr.length >= 0:
			if res.ContentLength != fr.length || res.TransferEncoding != nil {
				t.Fatalf("check: length %d; net/http: length %d, %q", fr.length, res.ContentLength, res.TransferEncoding)
			}
		default:
			if !res.Close {
				t.Fatalf("check: body to the close; net/http keeps the connection (length %d)", res.ContentLength)
			}
		}
	})
}
