package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// The value parsers below are shared by the file and the flags, so that a value is
// accepted or refused the same way wherever it comes from. Their errors say what is wrong
// and what to write instead; the caller adds where the value came from.

// The choices are functions, not package variables, so that nothing can change them.
func logLevels() []string         { return []string{"trace", "debug", "info", "warn", "error"} }
func logFormats() []string        { return []string{"auto", "text", "json"} }
func accessLogFormats() []string  { return []string{"json", "common", "combined"} }
func accessLogWhenFull() []string { return []string{"block", "drop"} }
func hostHeaders() []string       { return []string{HostHeaderClient, HostHeaderUpstream} }
func upstreamSchemes() []string {
	return []string{"http", "https", "unix", "h2c", "unix+h2c"}
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write e.g. \"30s\" or \"500ms\"", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative; write 0 or a positive duration such as \"30s\"", s)
	}
	return d, nil
}

// delaySetting is drain.delay: a duration, or "auto".
type delaySetting struct {
	fixed time.Duration
	auto  bool
}

func parseDelay(s string) (delaySetting, error) {
	if s == "auto" {
		return delaySetting{auto: true}, nil
	}
	d, err := parseDuration(s)
	if _, bad := time.ParseDuration(s); bad != nil {
		err = fmt.Errorf("%q is neither a duration nor \"auto\"; write e.g. \"5s\", or \"auto\" to end the delay once new connections stop", s)
	}
	return delaySetting{fixed: d}, err
}

func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err == nil && d == 0 {
		err = fmt.Errorf("%q is zero; write a positive duration such as \"5s\"", s)
	}
	return d, err
}

// oneOf returns a parser that accepts exactly the given choices.
func oneOf(choices []string) func(string) (string, error) {
	return func(s string) (string, error) {
		for _, c := range choices {
			if s == c {
				return s, nil
			}
		}
		return "", fmt.Errorf("%q is not allowed; write one of %s", s, quoteList(choices))
	}
}

func quoteList(choices []string) string {
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = strconv.Quote(c)
	}
	return strings.Join(q, ", ")
}

// atLeast returns a parser for an integer that must be min or more.
func atLeast[T int | int64](min T) func(T) (T, error) {
	return func(n T) (T, error) {
		if n < min {
			return 0, fmt.Errorf("%d is too small; write %d or more", n, min)
		}
		return n, nil
	}
}

// parseListenAddress accepts host:port with a numeric port, as net.Listen takes it.
func parseListenAddress(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port; write e.g. \":8080\" or \"127.0.0.1:8080\"", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%q has port %q; the port must be a number from 0 to 65535", s, port)
	}
	if strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("%q has host %q; write an IP address, a host name, or nothing for all interfaces", s, host)
	}
	return s, nil
}

// parseAdminAddress is parseListenAddress, except that "off" gives "" (no admin listener).
func parseAdminAddress(s string) (string, error) {
	if s == "off" {
		return "", nil
	}
	if _, err := parseListenAddress(s); err != nil {
		return "", fmt.Errorf("%w, or \"off\" to disable the admin listener", err)
	}
	return s, nil
}

// parseAdminToken accepts "" (no token) or one word of printable ASCII, as it must be
// sent in an Authorization header.
func parseAdminToken(s string) (string, error) {
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return "", errors.New("contains a space or a character that cannot be sent in a header; use printable ASCII without spaces, e.g. the output of: openssl rand -hex 32")
		}
	}
	return s, nil
}

// parseAllowedHost accepts a host name or an IP address as the admin listener's Host may
// carry it, without scheme, port or path, and returns it in lower case.
func parseAllowedHost(s string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(s, "."))
	if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return a.String(), nil
	}
	if h == "" || strings.ContainsAny(h, ":/?#@[]* ") {
		return "", fmt.Errorf("%q is not a host name or IP address; write it as a client puts it in Host, without scheme or port, e.g. \"drainproxy-admin.internal\"", s)
	}
	return h, nil
}

// readTokenFile returns the admin token stored in the file at path (surrounding
// whitespace, such as a final newline, removed).
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%q is empty; write the token into it, or remove token_file", path)
	}
	if _, err := parseAdminToken(tok); err != nil {
		return "", fmt.Errorf("%q %v", path, err)
	}
	return tok, nil
}

// parseHealthPath accepts "" (check by connecting only) or an absolute request path.
func parseHealthPath(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if !strings.HasPrefix(s, "/") {
		return "", fmt.Errorf("%q does not start with /; write e.g. \"/healthz\", or \"\" to only check that the upstream accepts connections", s)
	}
	if strings.ContainsAny(s, " \t\r\n#") {
		return "", fmt.Errorf("%q contains a space or #; write a plain path such as \"/healthz\"", s)
	}
	return s, nil
}

func parseUpstreamURL(s string) (*url.URL, error) {
	const examples = `write e.g. "http://127.0.0.1:3000", "https://app.internal" or "unix:///run/app.sock"`
	if s == "" {
		return nil, errors.New("is empty; " + examples)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		switch {
		case strings.HasPrefix(s, "/"):
			return nil, fmt.Errorf("%q has no scheme; for a unix socket write %q", s, "unix://"+s)
		case !strings.Contains(s, "://"):
			return nil, fmt.Errorf("%q has no scheme; write %q", s, "http://"+s)
		}
		return nil, fmt.Errorf("%q is not a URL; %s", s, examples)
	}
	switch u.Scheme {
	case "http", "https", "h2c":
		if u.Hostname() == "" {
			return nil, fmt.Errorf("%q has no host; %s", s, examples)
		}
		if p := u.Port(); p != "" {
			if _, err := strconv.ParseUint(p, 10, 16); err != nil {
				return nil, fmt.Errorf("%q has port %q; the port must be a number from 0 to 65535", s, p)
			}
		}
	case "unix", "unix+h2c":
		if u.Host != "" || u.Path == "" {
			return nil, fmt.Errorf("%q does not name a socket path; write three slashes and an absolute path, e.g. \"%s:///run/app.sock\"", s, u.Scheme)
		}
	default:
		if !strings.Contains(s, "://") {
			// "localhost:3000" parses with scheme "localhost"; say what was probably meant.
			return nil, fmt.Errorf("%q has no scheme; write %q", s, "http://"+s)
		}
		return nil, fmt.Errorf("%q has scheme %q; the scheme must be one of %s", s, u.Scheme, quoteList(upstreamSchemes()))
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%q has a #fragment, which is never sent to a server; remove it", s)
	}
	return u, nil
}

// parseTrustedProxy accepts a CIDR prefix or a bare address (a /32 or /128). Host bits
// set in a prefix are refused rather than masked: "10.0.0.1/8" is more likely a typo than
// a deliberate "10.0.0.0/8".
func parseTrustedProxy(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix; write e.g. \"10.0.0.0/8\" or \"127.0.0.1\"", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone; write the address without %%%s", s, a.Zone())
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		// netip's own message names the bad part (address, bits, zone).
		msg := err.Error()
		if i := strings.Index(msg, "): "); i >= 0 {
			msg = msg[i+3:]
		}
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix (%s); write e.g. \"10.0.0.0/8\" or \"fd00::/8\"", s, msg)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has bits set after the first %d; write %q", s, p.Bits(), m.String())
	}
	return p, nil
}

func parseAccessLog(s string) (string, error) {
	if s == "" {
		return "", errors.New(`is empty; write "stdout", "stderr", "off" or a file path`)
	}
	return s, nil
}

// parseCommand accepts an argv; an empty one means "no command" (nil).
func parseCommand(argv []string) ([]string, error) {
	if len(argv) == 0 {
		return nil, nil
	}
	if argv[0] == "" {
		return nil, errors.New(`has an empty program name; write e.g. ["./app", "--port", "3000"]`)
	}
	return argv, nil
}
