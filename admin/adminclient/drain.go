package adminclient

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Drain is `drainproxy drain [-admin ADDR] [-token-file F] [-wait] [-timeout DUR]`:
// it asks the admin listener of a running drainproxy to start its drain and to stay up
// after it until its own SIGTERM (POST /drain?hold=true), and with -wait returns only once
// the drain has finished waiting for in-flight requests (GET /drained, a long poll).
//
// It is the preStop hook of drainproxy as a Kubernetes native sidecar (an init container
// with restartPolicy: Always): kubelet runs every container's preStop at once but sends a
// native sidecar its SIGTERM only after the app's containers have exited, so the drain
// must start from the hook, and the process must not exit before that SIGTERM. It needs
// no shell, so it runs in the FROM scratch image as `exec: ["/drainproxy", "drain",
// "-wait"]`.
//
// Exit 0 when the drain has started (or, with -wait, has finished waiting); 1 with one
// line on stderr saying why not; 2 for bad usage.
func Drain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("drainproxy drain", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	admin := fs.String("admin", "127.0.0.1:9901", "the admin listener's `ADDR` (host:port, or :port for this host)")
	tokenFile := fs.String("token-file", "", "read the admin token from `FILE` (admin { token_file })")
	wait := fs.Bool("wait", false, "return only when the drain has finished waiting for in-flight requests")
	timeout := fs.Duration("timeout", 0, "give up after `DUR` (0: wait as long as the drain takes; it ends by itself after drain.delay + drain.grace)")
	usage := "usage: drainproxy drain [-admin 127.0.0.1:9901] [-token-file FILE] [-wait] [-timeout DUR]"
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return ExitOK
		}
		fmt.Fprintf(stderr, "drainproxy drain: %v\n%s\n", err, usage)
		return ExitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "drainproxy drain: unexpected argument %q\n%s\n", fs.Arg(0), usage)
		return ExitUsage
	}
	if *timeout < 0 {
		fmt.Fprintf(stderr, "drainproxy drain: -timeout %s: must be 0 (no limit) or more\n", *timeout)
		return ExitUsage
	}
	base, err := adminBaseURL(*admin)
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy drain: -admin %q: %v\n%s\n", *admin, err, usage)
		return ExitUsage
	}
	token, err := readAdminToken(*tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy drain: %v\n", err)
		return ExitFailure
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	dc := &drainClient{base: base, token: token, tokenFile: *tokenFile, timeout: *timeout,
		http: &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}}

	line, err := dc.start(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy drain: %v\n", err)
		return ExitFailure
	}
	if !*wait {
		fmt.Fprintln(stdout, line)
		return ExitOK
	}
	started := time.Now()
	if err := dc.waitDrained(ctx); err != nil {
		fmt.Fprintf(stderr, "drainproxy drain: %v\n", err)
		return ExitFailure
	}
	waited := time.Since(started).Round(time.Millisecond)
	if n := dc.aborted(ctx); n > 0 {
		// The wait is over, but not every request was answered: the drain's exit code
		// will be 1, and a hook that says "drained" would hide it.
		fmt.Fprintf(stderr, "drainproxy drain: the drain's deadline (drain.grace) cut %d request(s) still in flight after %s (aborted_requests in /status); drainproxy holds until its SIGTERM and exits 1\n", n, waited)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "drained (waited %s); drainproxy holds until its SIGTERM\n", waited)
	return ExitOK
}

// aborted returns the drain's aborted_requests from GET /status: requests the deadline
// cut. 0 when /status cannot be read (the process may have exited after a plain drain).
func (c *drainClient) aborted(ctx context.Context) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.JoinPath("/status").String(), nil)
	if err != nil {
		return 0
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Aborted int `json:"aborted_requests"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) != nil {
		return 0
	}
	return st.Aborted
}

type drainClient struct {
	base      *url.URL
	token     string
	tokenFile string
	timeout   time.Duration // -timeout, for messages (0: none)
	http      *http.Client
}

// drainedPoll bounds one long poll of GET /drained; a longer drain takes several.
const drainedPoll = 60 * time.Second

// start sends POST /drain?hold=true and returns the admin listener's one-line answer.
func (c *drainClient) start(ctx context.Context) (string, error) {
	// The answer is immediate; the bound only stops a stuck listener from hanging us.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := *c.base
	u.Path, u.RawQuery = "/drain", "hold=true"
	status, body, err := c.do(ctx, http.MethodPost, u.String())
	if err != nil {
		return "", c.unreachable(err)
	}
	if status != http.StatusAccepted {
		return "", c.refused(http.MethodPost, u.Path, status, body)
	}
	return body, nil
}

// waitDrained long-polls GET /drained until it says the drain has finished waiting.
func (c *drainClient) waitDrained(ctx context.Context) error {
	for {
		poll := drainedPoll
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			if left <= 0 {
				return c.timedOut("")
			}
			poll = min(poll, left)
		}
		u := *c.base
		u.Path = "/drained"
		u.RawQuery = url.Values{"begin_within": {"5s"}, "timeout": {poll.Round(time.Millisecond).String()}}.Encode()
		// The listener answers 503 at the end of the poll; a second more for it to arrive.
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second+poll+time.Second)
		stop := context.AfterFunc(ctx, cancel)
		status, body, err := c.do(pctx, http.MethodGet, u.String())
		stop()
		cancel()
		switch {
		case ctx.Err() != nil:
			return c.timedOut(body)
		case err != nil && closedUnderUs(err):
			// The admin listener closes only after the drain, as the process exits: it
			// did not hold (a signal had come already) or it was killed.
			return fmt.Errorf("the admin listener at %s closed before it said the drain was over (%v): drainproxy exited or was killed; its log has the drain's summary", c.base.Host, err)
		case err != nil:
			return c.unreachable(err)
		case status == http.StatusOK && body == "drained":
			return nil
		case status == http.StatusOK: // "not draining": the drain did not begin
			return fmt.Errorf("%s: GET /drained answered %q although the drain was started: is -admin the admin address of the drainproxy that was asked to drain?", c.base.Host, body)
		case status == http.StatusServiceUnavailable:
			continue // still draining: poll again
		default:
			return c.refused(http.MethodGet, u.Path, status, body)
		}
	}
}

// do sends one request and returns the status and the answer's first line.
func (c *drainClient) do(ctx context.Context, method, target string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return 0, "", err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, strings.TrimSpace(firstLine(b)), nil
}

// unreachable says in one line why the admin listener could not be asked.
func (c *drainClient) unreachable(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("the admin listener at %s refused the connection: is drainproxy running, and is %s its admin address (-admin)?", c.base.Host, c.base.Host)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("the admin listener at %s did not answer in time: %v", c.base.Host, err)
	}
	return fmt.Errorf("the admin listener at %s: %v", c.base.Host, err)
}

// refused says in one line why the admin listener did not do what was asked.
func (c *drainClient) refused(method, path string, status int, body string) error {
	what := fmt.Sprintf("%s: %s %s: %d %s", c.base.Host, method, path, status, http.StatusText(status))
	switch {
	case status == http.StatusUnauthorized && c.token == "":
		return fmt.Errorf("%s: the admin listener has a token; pass its file with -token-file", what)
	case status == http.StatusUnauthorized:
		return fmt.Errorf("%s: the token in %s is not the admin listener's (admin { token_file })", what, c.tokenFile)
	}
	return fmt.Errorf("%s: %s", what, body)
}

func (c *drainClient) timedOut(last string) error {
	if last != "" {
		return fmt.Errorf("timeout: the drain had not finished after -timeout %s (%s)", c.timeout, last)
	}
	return fmt.Errorf("timeout: the drain had not finished after -timeout %s", c.timeout)
}

// closedUnderUs reports whether err is the admin listener going away: the connection
// refused, reset or closed before an answer.
func closedUnderUs(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
