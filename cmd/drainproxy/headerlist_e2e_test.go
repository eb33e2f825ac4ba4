package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Issue 23, item 5: the decoded request header list is capped by default near 64 KiB on
// HTTP/1.1 and HTTP/2 (431 above), so that one 4,000-byte header put in the HPACK table
// once and referenced 250 times (a few hundred bytes on the wire) is not decoded to 1 MB
// and forwarded to the app.
func TestRequestHeaderListCapped(t *testing.T) {
	var reached atomic.Int64
	up := serveUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, "ok")
	}))
	p := startProxy(t, "-upstream", "http://"+up)

	// HTTP/1.1: 70 KiB of header.
	req, _ := http.NewRequest("GET", "http://"+p.Addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 70<<10))
	res, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	t.Logf("HTTP/1.1 70 KiB: %s", res.Status)
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("HTTP/1.1 with 70 KiB of header: %s, want 431", res.Status)
	}

	// HTTP/2: one 4,000-byte field indexed by the first request, referenced 250 times by
	// the second (each reference a byte or two on the wire).
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.SetMaxReadFrameSize(1 << 20)
	io.WriteString(c, http2.ClientPreface)
	fr.WriteSettings()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	big := hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 4000)}
	send := func(id uint32, refs int) {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for range refs {
			enc.WriteField(big)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
	}
	status := func(id uint32) string {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("stream %d: %v", id, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == id {
					return f.PseudoValue("status")
				}
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					return "RST_STREAM " + f.ErrCode.String()
				}
			case *http2.GoAwayFrame:
				return "GOAWAY " + f.ErrCode.String()
			}
		}
	}
	send(1, 1)
	if got := status(1); got != "200" {
		t.Fatalf("one 4,000-byte header over HTTP/2: %s, want 200", got)
	}
	before := reached.Load()
	send(3, 250)
	t.Logf("250 references: %d bytes of header block on the wire, %d decoded", hbuf.Len(), 250*(4000+5+32))
	if got := status(3); got != "431" {
		t.Errorf("250 references to a 4,000-byte header over HTTP/2: %s, want 431", got)
	}
	if reached.Load() != before {
		t.Error("the over-long header list reached the app")
	}
}
