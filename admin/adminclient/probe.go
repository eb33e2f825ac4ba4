package adminclient

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Probe is `drainproxy probe [-timeout 2s] URL`, a health check for compose, Docker's HEALTHCHECK and exec probes. It is quiet on
// success, as such checks should be, and says in one line on stderr why it failed.
func Probe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("drainproxy probe", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after `DUR`")
	usage := "usage: drainproxy probe [-timeout 2s] URL   (e.g. http://127.0.0.1:9901/readyz)"
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usage)
			return ExitOK
		}
		fmt.Fprintf(stderr, "drainproxy probe: %v\n%s\n", err, usage)
		return ExitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "drainproxy probe: want exactly one URL, got %d arguments\n%s\n", fs.NArg(), usage)
		return ExitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "drainproxy probe: -timeout %s: must be more than 0\n", *timeout)
		return ExitUsage
	}
	target := fs.Arg(0)
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "drainproxy probe: %q is not an http:// or https:// URL with a host\n%s\n", target, usage)
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy probe: %v\n", err)
		return ExitUsage
	}
	client := &http.Client{
		// A probe must see the endpoint's own answer, not where a redirect leads.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", *timeout)
		}
		fmt.Fprintf(stderr, "drainproxy probe: %s: %v\n", target, err)
		return ExitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "drainproxy probe: %s: %s: %s\n", target, resp.Status, firstLine(body))
		return ExitFailure
	}
	return ExitOK
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return string(b[:i])
		}
	}
	return string(b)
}
