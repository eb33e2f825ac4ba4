package accesslog

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sampleRecord() record {
	return record{
		start:     time.Date(2026, 11, 25, 4, 25, 12, 123456789, time.UTC),
		duration:  1234567 * time.Nanosecond,
		client:    "192.0.2.7:51234",
		method:    "GET",
		host:      "example.com",
		uri:       "/a/b?c=d",
		proto:     "HTTP/1.1",
		requestID: "0123456789abcdef0123456789abcdef",
		referer:   "https://example.com/",
		userAgent: "curl/8.5.0",
		status:    200,
		bytesIn:   5,
		bytesOut:  13,
	}
}

func TestFormats(t *testing.T) {
	upstream := "http://127.0.0.1:3000"
	tests := []struct {
		name   string
		format appendFunc
		edit   func(r *record)
		want   string
	}{
		{
			name:   "json",
			format: jsonAppender(upstream),
			want: `{"time":"2026-11-25T04:25:12.123Z","client":"192.0.2.7:51234","method":"GET","host":"example.com",` +
				`"path":"/a/b?c=d","proto":"HTTP/1.1","status":200,"bytes_in":5,"bytes_out":13,"duration_ms":1.235,` +
				`"upstream":"http://127.0.0.1:3000","request_id":"0123456789abcdef0123456789abcdef"}` + "\n",
		},
		{
			name:   "json with upstream error, upgrade and no id",
			format: jsonAppender(upstream),
			edit: func(r *record) {
				r.status, r.upError, r.upgraded, r.requestID, r.bytesOut = 502, "refused", true, "", 0
			},
			want: `{"time":"2026-11-25T04:25:12.123Z","client":"192.0.2.7:51234","method":"GET","host":"example.com",` +
				`"path":"/a/b?c=d","proto":"HTTP/1.1","status":502,"bytes_in":5,"bytes_out":0,"duration_ms":1.235,` +
				`"upstream":"http://127.0.0.1:3000","upstream_error":"refused","upgraded":true,"request_id":""}` + "\n",
		},
		{
			name:   "json for a request the drain's deadline cut",
			format: jsonAppender(upstream),
			edit:   func(r *record) { r.cut = "mid_response" },
			want: `{"time":"2026-11-25T04:25:12.123Z","client":"192.0.2.7:51234","method":"GET","host":"example.com",` +
				`"path":"/a/b?c=d","proto":"HTTP/1.1","status":200,"bytes_in":5,"bytes_out":13,"duration_ms":1.235,` +
				`"upstream":"http://127.0.0.1:3000","cut_by_drain":"mid_response","request_id":"0123456789abcdef0123456789abcdef"}` + "\n",
		},
		{
			name:   "common",
			format: appendCommon,
			want:   `192.0.2.7 - - [25/Nov/2026:04:25:12 +0000] "GET /a/b?c=d HTTP/1.1" 200 13` + "\n",
		},
		{
			name:   "common: no body is a dash, IPv6 client",
			format: appendCommon,
			edit:   func(r *record) { r.bytesOut, r.client, r.status = 0, "[::1]:8080", 304 },
			want:   `::1 - - [25/Nov/2026:04:25:12 +0000] "GET /a/b?c=d HTTP/1.1" 304 -` + "\n",
		},
		{
			name:   "combined",
			format: appendCombined,
			want:   `192.0.2.7 - - [25/Nov/2026:04:25:12 +0000] "GET /a/b?c=d HTTP/1.1" 200 13 "https://example.com/" "curl/8.5.0"` + "\n",
		},
		{
			name:   "combined: absent headers are dashes, hostile ones escaped",
			format: appendCombined,
			edit:   func(r *record) { r.referer, r.userAgent, r.uri = "", "x\" \"forged\n\\", "/\x00é" },
			want:   `192.0.2.7 - - [25/Nov/2026:04:25:12 +0000] "GET /\x00\xc3\xa9 HTTP/1.1" 200 13 "-" "x\" \"forged\x0a\\"` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleRecord()
			if tt.edit != nil {
				tt.edit(&r)
			}
			if got := string(tt.format(nil, &r)); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// Whatever a client puts in the request, a JSON line stays one valid JSON object.
func TestJSONLineSurvivesHostileInput(t *testing.T) {
	r := sampleRecord()
	r.uri = "/\"}\n{\"status\":1\t\\\x01\x7f\u2028"
	r.host = "bad\xffutf8\xc3"
	r.method = "G\rET"
	line := jsonAppender("http://[::1]:3000")(nil, &r)
	if n := strings.Count(string(line), "\n"); n != 1 || line[len(line)-1] != '\n' {
		t.Fatalf("line %q: want exactly one newline, at the end", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	if got["path"] != r.uri || got["method"] != r.method || got["status"] != 200.0 {
		t.Errorf("fields did not round-trip: %v", got)
	}
	if got["host"] != "bad\ufffdutf8\ufffd" {
		t.Errorf("host %q: want invalid bytes replaced by U+FFFD", got["host"])
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\/\b\f\n\r\t", "\x00\x1f\x7f", "é€𝄞", "\xff\xfe", "\xed\xa0\x80", "a\u2028b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := appendJSONString([]byte("x"), s)
		if enc[0] != 'x' {
			t.Fatal("overwrote what was in the buffer")
		}
		var got string
		if err := json.Unmarshal(enc[1:], &got); err != nil {
			t.Fatalf("%q encodes as %q: %v", s, enc[1:], err)
		}
		// encoding/json replaces invalid UTF-8 the same way: byte by byte.
		std, _ := json.Marshal(s)
		var want string
		json.Unmarshal(std, &want)
		if got != want {
			t.Fatalf("%q decodes to %q, want %q", s, got, want)
		}
	})
}

func FuzzAppendCLFItem(f *testing.F) {
	for _, s := range []string{"", "/a?b=c", "\"quoted\" \\ back", "\n\r\t\x00\x7f", "é\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := string(appendCLFItem(nil, s))
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c < 0x20 || c >= 0x7f {
				t.Fatalf("%q encodes as %q, with byte %#x", s, enc, c)
			}
		}
		if got := unescapeCLF(t, enc); got != s {
			t.Fatalf("%q encodes as %q, which reads back as %q", s, enc, got)
		}
	})
}

// unescapeCLF reverses appendCLFItem, failing on a quote that is not escaped.
func unescapeCLF(t *testing.T, s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			t.Fatalf("%q has a bare quote at %d", s, i)
		case c != '\\':
			b.WriteByte(c)
		case i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\'):
			b.WriteByte(s[i+1])
			i++
		case i+3 < len(s) && s[i+1] == 'x':
			n, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				t.Fatalf("%q: bad escape at %d", s, i)
			}
			b.WriteByte(byte(n))
			i += 3
		default:
			t.Fatalf("%q: bare backslash at %d", s, i)
		}
	}
	return b.String()
}
