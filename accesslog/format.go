package accesslog

import (
	"net"
	"strconv"
	"time"
	"unicode/utf8"
)

// Line formats, for Options.Format.
const (
	FormatJSON     = "json"     // one JSON object per line with every field (the default)
	FormatCommon   = "common"   // NCSA Common Log Format
	FormatCombined = "combined" // Common plus "referer" and "user-agent"
)

// record is what the access log keeps of one exchange: plain values copied on the request's
// goroutine, so that nothing of the request is touched once it is over. Strings share the
// request's memory (they are immutable) instead of being copied.
type record struct {
	start     time.Time
	duration  time.Duration
	client    string // ip:port as the server saw it
	method    string
	host      string
	uri       string // the request target as sent: path and query
	proto     string
	requestID string
	referer   string // combined format only
	userAgent string // combined format only
	upError   string // proxy.Reason*, or ""
	upstream  string // the upstream when the request ended; "": the one given to jsonAppender
	status    int
	bytesIn   int64
	bytesOut  int64
	upgraded  bool
	cut       string // drain.Cut*: how the drain's deadline cut it, or ""
}

// appendFunc appends one formatted line, newline included.
type appendFunc func(b []byte, r *record) []byte

// jsonTime is RFC 3339 in UTC with milliseconds: sortable, and what log collectors parse.
const jsonTime = "2006-01-02T15:04:05.000Z07:00"

// jsonAppender returns the JSON line formatter, for one goroutine (the worker). The
// upstream changes only at a zero-downtime restart, so its escaped form is kept until then.
func jsonAppender(upstream string) appendFunc {
	fixed := appendJSONString(nil, upstream)
	last, lastUp := upstream, appendJSONString(nil, upstream)
	return func(b []byte, r *record) []byte {
		up := fixed
		if r.upstream != "" {
			if r.upstream != last {
				last, lastUp = r.upstream, appendJSONString(lastUp[:0], r.upstream)
			}
			up = lastUp
		}
		b = append(b, `{"time":"`...)
		b = r.start.UTC().AppendFormat(b, jsonTime)
		b = append(b, `","client":`...)
		b = appendJSONString(b, r.client)
		b = append(b, `,"method":`...)
		b = appendJSONString(b, r.method)
		b = append(b, `,"host":`...)
		b = appendJSONString(b, r.host)
		b = append(b, `,"path":`...)
		b = appendJSONString(b, r.uri)
		b = append(b, `,"proto":`...)
		b = appendJSONString(b, r.proto)
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.status), 10)
		b = append(b, `,"bytes_in":`...)
		b = strconv.AppendInt(b, r.bytesIn, 10)
		b = append(b, `,"bytes_out":`...)
		b = strconv.AppendInt(b, r.bytesOut, 10)
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, float64(r.duration)/float64(time.Millisecond), 'f', 3, 64)
		b = append(b, `,"upstream":`...)
		b = append(b, up...)
		if r.upError != "" {
			b = append(b, `,"upstream_error":`...)
			b = appendJSONString(b, r.upError)
		}
		if r.upgraded {
			b = append(b, `,"upgraded":true`...)
		}
		if r.cut != "" {
			b = append(b, `,"cut_by_drain":`...)
			b = appendJSONString(b, r.cut)
		}
		b = append(b, `,"request_id":`...)
		b = appendJSONString(b, r.requestID)
		return append(b, "}\n"...)
	}
}

// clfTime is the Common Log Format's time, in the local zone as Apache and nginx write it.
const clfTime = "[02/Jan/2006:15:04:05 -0700]"

// appendCommon formats NCSA Common Log Format:
//
//	127.0.0.1 - - [25/Nov/2026:04:25:12 +0000] "GET /a?b=c HTTP/1.1" 200 13
//
// The format has no room for the request id, duration or upstream; the JSON format has them.
func appendCommon(b []byte, r *record) []byte {
	b = appendCommonFields(b, r)
	return append(b, '\n')
}

// appendCombined is Common plus the Referer and User-Agent, quoted ("-" when absent).
func appendCombined(b []byte, r *record) []byte {
	b = appendCommonFields(b, r)
	b = append(b, ' ')
	b = appendCLFQuoted(b, r.referer)
	b = append(b, ' ')
	b = appendCLFQuoted(b, r.userAgent)
	return append(b, '\n')
}

func appendCommonFields(b []byte, r *record) []byte {
	host, _, err := net.SplitHostPort(r.client)
	if err != nil {
		host = r.client
	}
	b = appendCLFItem(b, host)
	b = append(b, " - - "...)
	b = r.start.AppendFormat(b, clfTime)
	b = append(b, ` "`...)
	b = appendCLFItem(b, r.method)
	b = append(b, ' ')
	b = appendCLFItem(b, r.uri)
	b = append(b, ' ')
	b = appendCLFItem(b, r.proto)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, ' ')
	if r.bytesOut == 0 {
		return append(b, '-') // as Apache's %b
	}
	return strconv.AppendInt(b, r.bytesOut, 10)
}

func appendCLFQuoted(b []byte, s string) []byte {
	if s == "" {
		return append(b, `"-"`...)
	}
	b = append(b, '"')
	b = appendCLFItem(b, s)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendCLFItem appends s escaped as Apache escapes log items: quote and backslash get a
// backslash, control characters and bytes outside printable ASCII become \xhh, so a client
// can neither break the line nor forge a field.
func appendCLFItem(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		if c == '"' || c == '\\' {
			b = append(b, '\\', c)
		} else {
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	return append(b, s[start:]...)
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD byte by byte,
// as encoding/json does, so every line is valid JSON whatever a client sent.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
