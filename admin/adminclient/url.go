// Package adminclient is the `drainproxy drain` and `drainproxy status` subcommands: clients
// of a running drainproxy's admin listener (POST /drain, GET /drained, GET /status) and the
// status -watch screen. They need nothing but the drainproxy binary, so that they run in
// the FROM scratch image (a preStop hook, kubectl exec).
package adminclient

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// adminBaseURL is the admin listener's URL for the `drain` and `status` subcommands, from
// -admin: host:port (a wildcard host, ":9901" or "0.0.0.0:9901" as a listener is configured,
// is called on loopback, which needs no token), or an http:// or https:// URL.
func adminBaseURL(addr string) (*url.URL, error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(strings.TrimSuffix(addr, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
			return nil, errors.New("want host:port, such as 127.0.0.1:9901, or http://host:port")
		}
		return u, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, errors.New("want host:port, such as 127.0.0.1:9901 or :9901")
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
}

// readAdminToken is the admin token in -token-file's file ("" for no file): surrounding
// white space trimmed; a file that holds nothing is an error, not "no token".
func readAdminToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("-token-file %s is empty; it must hold the admin token", file)
	}
	return token, nil
}

// Exit codes of the subcommands, the program's own (the README lists them).
const (
	ExitOK      = 0 // done
	ExitFailure = 1 // the admin listener could not be reached or refused, or a drain was forced
	ExitUsage   = 2 // bad flags
)
