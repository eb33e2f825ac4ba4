package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/drainproxy/drainproxy/admin"
	"github.com/drainproxy/drainproxy/drain"
)

// Status is `drainproxy status [-admin ADDR] [-token-file F] [-watch] [-json]
//
// It reads GET /status of a running drainproxy and says where it is: phase, readiness and
// why, counts, the drain's step and time left, and the oldest requests in flight. It is
// for `kubectl exec POD -c drainproxy -- /drainproxy status -watch`, so it needs nothing
// but this binary. With -watch it follows the drain to its end: redrawn in place a few
// times a second on a terminal, one line per change on a pipe; it exits 0 when the drain
// completes cleanly and 1 when it was forced or its deadline cut something.
func Status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("drainproxy status", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("admin", "127.0.0.1:9901", "the admin listener, `ADDR` (host:port or http://host:port)")
	tokenFile := fs.String("token-file", "", "read the admin token from `FILE` (admin { token_file })")
	watch := fs.Bool("watch", false, "follow the drain until it ends; exit 0 if it completed cleanly, 1 if forced or aborted")
	asJSON := fs.Bool("json", false, "print /status as JSON (with -watch: one document per change)")
	every := fs.Duration("interval", 250*time.Millisecond, "with -watch, ask this often (`DUR`)")
	usage := "usage: drainproxy status [-admin 127.0.0.1:9901] [-token-file FILE] [-watch] [-json] [-interval 250ms]"
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usage)
			return ExitOK
		}
		fmt.Fprintf(stderr, "drainproxy status: %v\n%s\n", err, usage)
		return ExitUsage
	}
	if fs.NArg() != 0 || *every <= 0 {
		fmt.Fprintf(stderr, "drainproxy status: unexpected arguments %q\n%s\n", fs.Args(), usage)
		return ExitUsage
	}
	c, err := newStatusClient(*addr, *tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "drainproxy status: %v\n", err)
		return ExitUsage
	}
	if !*watch {
		st, raw, err := c.get(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "drainproxy status: %v\n", err)
			return ExitFailure
		}
		if *asJSON {
			stdout.Write(raw)
		} else {
			io.WriteString(stdout, renderScreen(st, time.Now(), 80, 10))
		}
		return ExitOK
	}
	w := &statusWatcher{c: c, out: stdout, errOut: stderr, json: *asJSON, every: *every}
	if f, ok := stdout.(*os.File); ok && !*asJSON && term.IsTerminal(int(f.Fd())) {
		w.tty = f
	}
	return w.run(ctx)
}

type statusClient struct {
	url   string
	token string
	http  *http.Client
}

func newStatusClient(addr, tokenFile string) (*statusClient, error) {
	base, err := adminBaseURL(addr)
	if err != nil {
		return nil, fmt.Errorf("-admin %q: %w", addr, err)
	}
	token, err := readAdminToken(tokenFile)
	if err != nil {
		return nil, err
	}
	return &statusClient{url: base.String() + "/status", token: token,
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}}, nil
}

// get fetches /status once.
func (c *statusClient) get(ctx context.Context) (*admin.Status, []byte, error) {
	return c.getQuery(ctx, c.http, "inflight=20")
}

// outcomeWait is how long one /status?wait_drained= request waits for the drain's end.
const outcomeWait = 20 * time.Second

// waitOutcome holds a /status?wait_drained= request open until the drain has finished
// waiting, and returns that document: the process may exit right after, too soon for the
// next poll, but the admin listener lets a request in progress finish.
func (c *statusClient) waitOutcome(ctx context.Context) (*admin.Status, error) {
	long := &http.Client{Timeout: outcomeWait + 10*time.Second, Transport: &http.Transport{Proxy: nil}}
	for {
		st, _, err := c.getQuery(ctx, long, "inflight=0&wait_drained="+outcomeWait.String())
		if err != nil {
			return nil, err
		}
		if _, done := drainOutcome(st); done {
			return st, nil
		}
	}
}

func (c *statusClient) getQuery(ctx context.Context, client *http.Client, query string) (*admin.Status, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"?"+query, nil)
	if err != nil {
		return nil, nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w (is drainproxy running, and is -admin its admin address?)", c.url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", c.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s: %s: %s", c.url, resp.Status, firstLine(raw))
	}
	var st admin.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, nil, fmt.Errorf("%s: not a drainproxy status document: %w", c.url, err)
	}
	return &st, raw, nil
}

type statusWatcher struct {
	c           *statusClient
	out, errOut io.Writer
	tty         *os.File // set: redraw in place on this terminal
	json        bool
	every       time.Duration

	last     *admin.Status // the last answer
	lastKey  string        // what the last printed line said, for "one line per change"
	drawn    bool
	begunSet bool               // a drain was seen
	outcome  chan *admin.Status // from waitOutcome, once a drain was seen
}

func (w *statusWatcher) run(ctx context.Context) int {
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.outcome = make(chan *admin.Status, 1)
	failures := 0
	for {
		st, raw, err := w.c.get(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return 130
		case err != nil && w.last == nil:
			fmt.Fprintf(w.errOut, "drainproxy status: %v\n", err)
			return ExitFailure
		case err != nil:
			// Three misses in a row: the process is gone (after a drain, it exited).
			if failures++; failures >= 3 {
				if !w.begunSet {
					fmt.Fprintf(w.errOut, "drainproxy status: %v\n", err)
					return ExitFailure
				}
				return w.gone()
			}
		default:
			failures = 0
			w.last = st
			if st.Drain != nil && !w.begunSet {
				w.begunSet = true
				go func() {
					if st, err := w.c.waitOutcome(ctx); err == nil {
						w.outcome <- st
					}
				}()
			}
			w.show(st, raw)
			if code, done := drainOutcome(st); done {
				w.finish(st)
				return code
			}
		}
		select {
		case <-ctx.Done():
			return 130
		case st := <-w.outcome:
			w.last = st
			code, _ := drainOutcome(st)
			w.finish(st)
			return code
		case <-tick.C:
		}
	}
}

// drainOutcome says whether the drain has finished waiting, and the exit code for it.
func drainOutcome(st *admin.Status) (code int, done bool) {
	if st.Phase != drain.PhaseStopped.String() {
		return 0, false
	}
	if st.AbortedRequests > 0 || st.Unserved > 0 || (st.Drain != nil && st.Drain.Forced) {
		return ExitFailure, true
	}
	return ExitOK, true
}

// gone handles a process that stopped answering after a drain began: it exited (the admin
// listener closes last), so judge by what it said last.
func (w *statusWatcher) gone() int {
	st := w.last
	if code, done := drainOutcome(st); done {
		return code
	}
	if st.Drain != nil && (st.Drain.Step == drain.StepStopApp || st.Drain.Step == drain.StepFlush || st.Drain.Step == drain.StepDone) {
		if st.AbortedRequests > 0 || st.Drain.Forced {
			return ExitFailure
		}
		return ExitOK
	}
	fmt.Fprintf(w.errOut, "drainproxy status: the process stopped answering during step %q of its drain; its outcome is unknown\n", st.Drain.Step)
	return ExitFailure
}

func (w *statusWatcher) show(st *admin.Status, raw []byte) {
	now := time.Now()
	switch {
	case w.tty != nil:
		width, height, err := term.GetSize(int(w.tty.Fd()))
		if err != nil || width < 40 {
			width, height = 80, 24
		}
		screen := renderScreen(st, now, width, max(height-14, 1))
		var b strings.Builder
		if !w.drawn {
			b.WriteString("\x1b[2J") // clear once; then redraw over the same lines
			w.drawn = true
		}
		b.WriteString("\x1b[H")
		for line := range strings.Lines(screen) {
			b.WriteString(strings.TrimSuffix(line, "\n"))
			b.WriteString("\x1b[K\n") // clear what a longer line left
		}
		b.WriteString("\x1b[J") // and the lines below
		io.WriteString(w.tty, b.String())
	case w.json:
		if key := changeKey(st); key != w.lastKey {
			w.lastKey = key
			var compact bytes.Buffer
			json.Compact(&compact, raw)
			fmt.Fprintln(w.out, compact.String())
		}
	default:
		if key := changeKey(st); key != w.lastKey {
			w.lastKey = key
			fmt.Fprintln(w.out, renderLine(st, now))
		}
	}
}

// finish prints the outcome under the screen (a terminal) or as the last line.
func (w *statusWatcher) finish(st *admin.Status) {
	if w.json {
		return
	}
	code, _ := drainOutcome(st)
	verdict := "drain complete: nothing was cut"
	if code != ExitOK {
		how := "ABORTED"
		if st.Drain != nil && st.Drain.Forced {
			how = "FORCED"
		}
		verdict = fmt.Sprintf("drain complete, %s: %d cut (%d before the response head, %d mid-response, %d upgrades closed)",
			how, st.AbortedRequests, st.CutBeforeHead, st.CutMidResponse, st.UpgradesClosed)
		if st.Unserved > 0 {
			verdict += fmt.Sprintf(", %d connections unserved", st.Unserved)
		}
	}
	fmt.Fprintln(w.out, verdict)
}

// changeKey is what a line on a pipe is printed for: a change in phase, readiness, step
// or counts, not the clock.
func changeKey(st *admin.Status) string {
	step := ""
	if st.Drain != nil {
		step = st.Drain.Step
	}
	in := inflightOf(st)
	return fmt.Sprint(st.Phase, st.Ready, st.NotReadyReason, step, in.Requests, in.Streams, in.Upgraded,
		st.OpenConnections, st.DrainedRequests, st.AbortedRequests, st.UpstreamFailed)
}

func inflightOf(st *admin.Status) drain.Inflight {
	if st.Inflight != nil {
		return *st.Inflight
	}
	return drain.Inflight{Requests: int(st.InflightRequests - st.UpgradedConnections), Upgraded: int(st.UpgradedConnections)}
}

// renderLine is one line for a pipe.
func renderLine(st *admin.Status, now time.Time) string {
	var b strings.Builder
	in := inflightOf(st)
	fmt.Fprintf(&b, "%s phase=%s ready=%t", now.UTC().Format("15:04:05.000"), st.Phase, st.Ready)
	if st.NotReadyReason != "" {
		fmt.Fprintf(&b, " why=%q", st.NotReadyReason)
	}
	if d := st.Drain; d != nil {
		fmt.Fprintf(&b, " step=%s in_step=%s left=%s", d.Step, since(d.StepStarted, now), until(d.Deadline, now))
	}
	fmt.Fprintf(&b, " requests=%d streams=%d upgraded=%d connections=%d drained=%d aborted=%d upstream_failed=%d",
		in.Requests, in.Streams, in.Upgraded, st.OpenConnections, st.DrainedRequests, st.AbortedRequests, st.UpstreamFailed)
	if len(in.Entries) > 0 {
		e := in.Entries[0]
		fmt.Fprintf(&b, " oldest=%q", fmt.Sprintf("%s %s %.1fs %s", e.Method, e.Path, float64(e.Age), e.WaitsFor))
	}
	return b.String()
}

// renderScreen is the status as a screen of width columns, with at most rows in-flight
// rows. Lines are cut at width: a line that wrapped would shift every redraw.
func renderScreen(st *admin.Status, now time.Time, width, rows int) string {
	var b strings.Builder
	for line := range strings.Lines(screenLines(st, now, width, rows)) {
		line = strings.TrimSuffix(line, "\n")
		if len(line) > width {
			line = line[:width]
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func screenLines(st *admin.Status, now time.Time, width, rows int) string {
	var b strings.Builder
	in := inflightOf(st)
	fmt.Fprintf(&b, "drainproxy %s  pid %d  up %s  upstream %s\n", st.Version, st.PID,
		time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second), st.Upstream.URL)
	ready := "yes"
	if !st.Ready {
		ready = "no: " + st.NotReadyReason
	}
	fmt.Fprintf(&b, "phase   %-10s ready %s\n", st.Phase, ready)
	if d := st.Drain; d != nil {
		fmt.Fprintf(&b, "drain   step %s for %s (began %s ago: %s)\n", d.Step, since(d.StepStarted, now), since(d.Started, now), d.Reason)
		total, gone := d.Deadline.Sub(d.Started), now.Sub(d.Started)
		barWidth := max(width-48, 10)
		fmt.Fprintf(&b, "        %s %s / %s  deadline in %s\n", progressBar(gone, total, barWidth),
			gone.Round(100*time.Millisecond), total.Round(100*time.Millisecond), until(d.Deadline, now))
	} else {
		b.WriteString("drain   not started\n")
	}
	fmt.Fprintf(&b, "now     %d requests, %d HTTP/2 streams, %d upgraded (WebSocket), %d client connections\n",
		in.Requests, in.Streams, in.Upgraded, st.OpenConnections)
	fmt.Fprintf(&b, "drain   %d completed, %d aborted (%d before head, %d mid-response, %d upgrades closed), %d upstream failed",
		st.DrainedRequests, st.AbortedRequests, st.CutBeforeHead, st.CutMidResponse, st.UpgradesClosed, st.UpstreamFailed)
	if st.Unserved > 0 {
		fmt.Fprintf(&b, ", %d connections unserved", st.Unserved)
	}
	b.WriteString("\n")
	if len(in.Entries) == 0 {
		return b.String()
	}
	shown := min(rows, len(in.Entries))
	fmt.Fprintf(&b, "\noldest in flight (%d of %d):\n", shown, in.Total)
	pathWidth := max(width-86, 12) // the other columns take 85
	fmt.Fprintf(&b, "  %7s  %-9s %-7s %-*s %-16s %9s %9s  %s\n", "AGE", "PROTO", "METHOD", pathWidth, "PATH", "WAITS FOR", "IN", "OUT", "ID")
	for _, e := range in.Entries[:shown] {
		fmt.Fprintf(&b, "  %6.1fs  %-9s %-7s %-*s %-16s %9d %9d  %s\n", float64(e.Age), e.Protocol, e.Method,
			pathWidth, clip(e.Path, pathWidth), e.WaitsFor, e.BytesIn, e.BytesOut, clip(e.ID, 10))
	}
	return b.String()
}

func progressBar(done, total time.Duration, width int) string {
	frac := 1.0
	if total > 0 {
		frac = min(max(float64(done)/float64(total), 0), 1)
	}
	full := int(frac * float64(width))
	return "[" + strings.Repeat("#", full) + strings.Repeat("-", width-full) + "]"
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 1 {
		return s[:n]
	}
	return s[:n-1] + "~"
}

func since(t, now time.Time) string { return max(now.Sub(t), 0).Round(100 * time.Millisecond).String() }
func until(t, now time.Time) string { return max(t.Sub(now), 0).Round(100 * time.Millisecond).String() }
