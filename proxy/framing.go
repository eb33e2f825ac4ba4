package proxy

import (
	"bytes"
	"net/http"
	"strings"
)

// Response framing checks for keep-alive reuse.
//
// http.ReadResponse is lenient where the RFC allows it (RFC 9112, 6.3): it takes both
// Content-Length and Transfer-Encoding (chunked wins), equal duplicate lengths, a length on
// a 204, and it does not look past the end of a body. Every one of those says the upstream
// and we may disagree about where the response ends; if we disagree, the rest is read as
// the answer to the next request on the connection, which is another client's. So the
// response is still passed on as ReadResponse parsed it, but its connection is not reused
// unless its raw head is plainly unambiguous.

// reusableHead reports whether the raw bytes read while parsing a response head (any 1xx
// heads, the final head, possibly the start of the body) frame the final response so
// plainly that its connection may carry another request afterwards. why names the doubt.
// method is the request's.
func reusableHead(raw []byte, method string) (ok bool, why string) {
	_, why = finalFraming(raw, method)
	return why == "", why
}

// framing is how the body of a plainly framed response ends.
type framing struct {
	status  int   // the final status code
	noBody  bool  // none follows (HEAD, 1xx, 204, 304)
	chunked bool  // chunked transfer coding
	length  int64 // Content-Length, or -1: none (then the body runs to the close)
}

// finalFraming finds the final head in raw and how its body ends; why is not empty when
// that is doubtful.
func finalFraming(raw []byte, method string) (f framing, why string) {
	for {
		status, http10, rest, why := headStatus(raw)
		if why != "" {
			return f, why
		}
		final := status < 100 || status > 199 || status == http.StatusSwitchingProtocols
		var next []byte
		next, f, why = checkFields(rest, status, http10, method, final)
		if why != "" || final {
			return f, why
		}
		raw = next
	}
}

// headStatus reads the status line at the start of raw: the status code, whether the
// version is HTTP/1.0, and what follows the line.
func headStatus(raw []byte) (status int, http10 bool, rest []byte, why string) {
	line, rest, ok := cutLine(raw)
	if !ok {
		return 0, false, nil, "incomplete status line"
	}
	// "HTTP/1.1 200 OK": the version, one space, three digits, then a space or the end.
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') ||
		line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, false, nil, "unusual status line"
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false, nil, "unusual status line"
		}
		status = status*10 + int(c-'0')
	}
	if hasCTL(line) {
		return 0, false, nil, "control character in the status line"
	}
	return status, line[7] == '0', rest, ""
}

// checkFields checks the header lines at the start of raw, up to the empty line that ends
// the head, and returns what follows it.
func checkFields(raw []byte, status int, http10 bool, method string, final bool) (rest []byte, f framing, why string) {
	f.status, f.length = status, -1
	var lengths, encodings int
	var length []byte
	chunked := false
	for {
		line, next, ok := cutLine(raw)
		if !ok {
			return nil, f, "incomplete head"
		}
		raw = next
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, f, "folded header line"
		}
		if hasCTL(line) {
			return nil, f, "control character in a header line"
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, f, "header line without a name and colon"
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenByte(c) {
				return nil, f, "invalid header name"
			}
		}
		value := bytes.Trim(line[colon+1:], " \t")
		switch {
		case asciiEqualFold(name, "Content-Length"):
			lengths++
			length = value
		case asciiEqualFold(name, "Transfer-Encoding"):
			encodings++
			chunked = asciiEqualFold(value, "chunked")
		}
	}
	if !final {
		return raw, f, ""
	}
	switch {
	case lengths > 1:
		return nil, f, "more than one Content-Length"
	case encodings > 1:
		return nil, f, "more than one Transfer-Encoding"
	case encodings == 1 && lengths == 1:
		return nil, f, "both Content-Length and Transfer-Encoding"
	case encodings == 1 && !chunked:
		return nil, f, "a Transfer-Encoding other than chunked"
	case encodings == 1 && http10:
		return nil, f, "Transfer-Encoding in an HTTP/1.0 response"
	case lengths == 1 && !validLength(length):
		return nil, f, "invalid Content-Length"
	}
	// Where no body may follow (RFC 9110, 6.4.1), one announced means the upstream may
	// send it anyway: a HEAD answered like a GET, a 204 or 304 with a body.
	f.noBody = method == http.MethodHead || status == http.StatusNoContent ||
		status == http.StatusNotModified || (status >= 100 && status <= 199)
	if f.noBody && (chunked || (lengths == 1 && !isZero(length))) {
		return nil, f, "a body announced where none may follow"
	}
	f.chunked = chunked
	if lengths == 1 {
		f.length = parseLength(length)
	}
	return raw, f, ""
}

// parseLength is the value of a Content-Length that validLength accepted.
func parseLength(v []byte) int64 {
	var n int64
	for _, c := range v {
		n = n*10 + int64(c-'0')
	}
	return n
}

// cutLine returns the line at the start of b without its LF (or CRLF) and the rest; ok is
// false when b holds no complete line.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, false
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest, true
}

// hasCTL reports a control character other than HTAB (NUL, a bare CR, ...) in line.
func hasCTL(line []byte) bool {
	for _, c := range line {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}

// validLength reports whether v is a plain decimal Content-Length that fits an int64.
func validLength(v []byte) bool {
	if len(v) == 0 || len(v) > 18 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isZero(v []byte) bool {
	for _, c := range v {
		if c != '0' {
			return false
		}
	}
	return true
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// isTokenByte reports whether c may appear in a header name (RFC 9110, 5.6.2).
func isTokenByte(c byte) bool { return tokenBytes[c] }

var tokenBytes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()
