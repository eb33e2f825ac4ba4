// Package accesslog writes drainproxy's access log: one line per proxied request, and one
// per upgraded connection when it closes, without slowing the request path and without
// losing a line at exit.
//
// The request's goroutine does as little as possible: Observe copies a few fields into a
// value and puts it on a bounded queue. One worker, Run, formats lines into a reused buffer
// and writes them in batches. Run is one of the drain's background workers: the drain
// cancels its context at the flush step, once no request can finish any more, and waits
// for it to write what is queued, fsync the file and close it.
//
// When the queue is full, WhenFull decides. WhenFullBlock (the default) makes the request
// wait for room: nothing is lost, the log slows the proxy instead. WhenFullDrop drops the
// line and counts it. Even when blocking, a request never waits for ever: a destination
// that fails (disk full) fails fast, and its lines are counted as write errors; one that
// hangs (a pipe nobody reads) for longer than StallTimeout makes the log drop and count
// lines until the worker moves again.
package accesslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/proxy"
)

// Destinations other than a file path, for Options.Destination.
const (
	Stdout = "stdout"
	Stderr = "stderr"
	// Off means no access log; New refuses it, so that it never becomes a file called "off".
	Off = "off"
)

// Policies for Options.WhenFull.
const (
	WhenFullBlock = "block" // wait for room: lose nothing (the default)
	WhenFullDrop  = "drop"  // drop the line and count it: never slow a request
)

// Options configures New. Every zero value is usable except Destination.
type Options struct {
	// Destination is Stdout, Stderr or a file path. A file is opened for appending and
	// created (mode 0644, less the umask) if missing: appending keeps logrotate's
	// copytruncate mode working, and Reopen serves its create mode. Stderr is shared with
	// the operational logs; Stdout or a file keeps the access log a stream of its own.
	Destination string
	// Format is FormatJSON (zero value), FormatCommon or FormatCombined.
	Format string
	// Upstream is the upstream address written on every JSON line.
	Upstream string
	// CurrentUpstream, when set, is asked for the upstream as each request ends, so that
	// lines follow a zero-downtime restart to the new instance (nil: Upstream always).
	CurrentUpstream func() string

	// Buffer is how many lines may wait between the requests and the writer (zero: 4096).
	Buffer int
	// WhenFull is what a request does when the buffer is full: WhenFullBlock (zero value)
	// or WhenFullDrop.
	WhenFull string
	// StallTimeout is how long a request waits for room under WhenFullBlock before the
	// destination is taken as stuck; from then on lines are dropped and counted, without
	// waiting, until the writer moves again (zero: 5s).
	StallTimeout time.Duration
	// FlushInterval is how long a line may wait in the writer's buffer at most; a full
	// buffer (64 KiB) is written at once (zero: 1s).
	FlushInterval time.Duration

	// Logger receives write errors, drops, reopens and the closing line (zero: discard).
	Logger hclog.Logger
	// Stdout and Stderr are the writers behind those destinations (zero: os.Stdout and
	// os.Stderr).
	Stdout, Stderr io.Writer
}

// bufSize is how many bytes of lines the writer collects before writing them.
const bufSize = 64 << 10

// dropReportEvery bounds how often dropped lines are reported in the operational log.
const dropReportEvery = 10 * time.Second

// gather is how long the worker lets lines collect after emptying the queue. Waking it for each
// line (a goroutine switch, and a thread wake-up when a core is idle) costs more than
// formatting the line; this way a busy proxy wakes it some 200 times a second, whatever
// the request rate, and an idle one never. When the queue is half full as the worker
// wakes, lines come faster than a pause can absorb, and it does not pause.
const gather = 5 * time.Millisecond

// Log is the access log: a drain.Observer for the request path and a worker (Run) that
// writes. Build it with New.
type Log struct {
	opts     Options
	log      hclog.Logger
	format   appendFunc
	combined bool // Observe copies the Referer and User-Agent
	drop     bool // WhenFullDrop

	queue   chan record
	stopped chan struct{} // closed when the worker takes no more lines
	reopen  chan struct{} // capacity 1: reopen requests coalesce
	stalled atomic.Bool   // a request waited StallTimeout for room: drop until the writer moves

	written, dropped, writeErrors atomic.Uint64

	// Only the worker touches the fields below, once Run has started.
	out        io.Writer
	file       *os.File // the open file when Destination is a path
	regular    bool     // file is a regular file, so fsync means something
	cur        record   // the record being formatted (a local would escape to the heap)
	buf        []byte   // formatted lines not written yet
	pending    uint64   // lines in buf
	brokenLine bool     // a failed write left half a line: start the next write on a new line
	failing    bool     // the last write failed
	lost       uint64   // lines lost since writes started failing
	reported   uint64   // dropped lines already reported
	reportedAt time.Time
}

// New opens the destination and returns the log, ready for Observe; call Run in a worker
// to write it. The error, for a file that cannot be opened for appending, names the path,
// says why and what to do, on one line.
func New(opts Options) (*Log, error) {
	l := &Log{opts: opts, log: opts.Logger}
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	switch opts.Format {
	case "", FormatJSON:
		l.format = jsonAppender(opts.Upstream)
	case FormatCommon:
		l.format = appendCommon
	case FormatCombined:
		l.format = appendCombined
		l.combined = true
	default:
		return nil, fmt.Errorf("access log format %q: want %q, %q or %q", opts.Format, FormatJSON, FormatCommon, FormatCombined)
	}
	switch opts.WhenFull {
	case "", WhenFullBlock:
	case WhenFullDrop:
		l.drop = true
	default:
		return nil, fmt.Errorf("access log policy when full %q: want %q or %q", opts.WhenFull, WhenFullBlock, WhenFullDrop)
	}
	if l.opts.Buffer <= 0 {
		l.opts.Buffer = 4096
	}
	if l.opts.StallTimeout <= 0 {
		l.opts.StallTimeout = 5 * time.Second
	}
	if l.opts.FlushInterval <= 0 {
		l.opts.FlushInterval = time.Second
	}

	switch opts.Destination {
	case Stdout:
		l.out = opts.Stdout
		if l.out == nil {
			l.out = os.Stdout
		}
	case Stderr:
		l.out = opts.Stderr
		if l.out == nil {
			l.out = os.Stderr
		}
	case "", Off:
		return nil, fmt.Errorf("access log destination %q: want %q, %q or a file path", opts.Destination, Stdout, Stderr)
	default:
		f, regular, err := openFile(opts.Destination)
		if err != nil {
			return nil, err
		}
		l.file, l.out, l.regular = f, f, regular
	}
	l.queue = make(chan record, l.opts.Buffer)
	l.stopped = make(chan struct{})
	l.reopen = make(chan struct{}, 1)
	l.buf = make([]byte, 0, bufSize)
	return l, nil
}

// openFile opens path for appending. With O_APPEND every write lands at the end of the
// file as it is then, so after logrotate's copytruncate the next line goes to the start of
// the emptied file instead of leaving a hole of zeros before it.
func openFile(path string) (f *os.File, regular bool, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		why := err
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			why = pe.Err
		}
		return nil, false, fmt.Errorf("access log %s: cannot open it for appending: %v; create its directory or make it writable, or set the access log to %q, %q or %q",
			path, why, Stdout, Stderr, Off)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("access log %s: %w", path, err)
	}
	return f, st.Mode().IsRegular(), nil
}

// Observe implements drain.Observer: it copies what the line needs and queues it. It
// runs on the request's goroutine and keeps nothing of x.
func (l *Log) Observe(x *drain.Exchange) {
	r := x.Request
	rec := record{
		start:     x.Start,
		duration:  x.Duration,
		client:    r.RemoteAddr,
		method:    r.Method,
		host:      r.Host,
		uri:       r.RequestURI,
		proto:     r.Proto,
		requestID: r.Header.Get(proxy.RequestIDHeader),
		upError:   x.UpstreamError,
		upstream:  l.currentUpstream(),
		status:    x.Status,
		bytesIn:   x.BytesIn,
		bytesOut:  x.BytesOut,
		upgraded:  x.Upgraded,
		cut:       x.CutByDrain,
	}
	if rec.uri == "" { // a request built in-process rather than read from a client
		rec.uri = r.URL.RequestURI()
	}
	if l.combined {
		rec.referer = r.Header.Get("Referer")
		rec.userAgent = r.Header.Get("User-Agent")
	}
	l.enqueue(&rec)
}

// currentUpstream is Options.CurrentUpstream's answer, or "" (the fixed Upstream).
func (l *Log) currentUpstream() string {
	if l.opts.CurrentUpstream == nil {
		return ""
	}
	return l.opts.CurrentUpstream()
}

// enqueue puts rec on the queue, or waits for room, or drops it, as the policy says.
func (l *Log) enqueue(rec *record) {
	select {
	case l.queue <- *rec:
		return
	default:
	}
	if l.drop || l.stalled.Load() {
		l.dropped.Add(1)
		return
	}
	stall := time.NewTimer(l.opts.StallTimeout)
	defer stall.Stop()
	select {
	case l.queue <- *rec:
	case <-stall.C:
		l.stalled.Store(true)
		l.dropped.Add(1)
	case <-l.stopped:
		// Only a request cut off by the drain's deadline can finish this late.
		l.dropped.Add(1)
	}
}

// Reopen asks the worker to reopen the file at Destination, between two writes: for
// logrotate's create mode, after the file was renamed. Lines already buffered go to the old
// file first. It never blocks; requests made while one is pending count as one. Without a file
// destination it does nothing.
func (l *Log) Reopen() {
	select {
	case l.reopen <- struct{}{}:
	default:
	}
}

// Written is how many lines reached the destination.
func (l *Log) Written() uint64 { return l.written.Load() }

// Dropped is how many lines were dropped because the queue was full (WhenFullDrop) or the
// destination was stuck (WhenFullBlock).
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// WriteErrors is how many lines were lost because writing them failed.
func (l *Log) WriteErrors() uint64 { return l.writeErrors.Load() }

// Run writes queued lines until ctx ends, then writes the rest, fsyncs and closes the file
// and logs one line with the totals. Start it once, as a drain worker; cancel ctx only
// when no more Observe calls can come.
func (l *Log) Run(ctx context.Context) {
	tick := time.NewTicker(l.opts.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case l.cur = <-l.queue:
			backlog := len(l.queue)
			l.add(&l.cur)
			if emptied := l.addQueued(); emptied && backlog < cap(l.queue)/2 {
				time.Sleep(gather)
			}
		case <-tick.C:
			l.flush()
			l.reportDrops()
		case <-l.reopen:
			// Lines queued before the reopen request belong to the old file: select
			// may pick this case while they wait.
			l.addQueued()
			l.flush()
			l.reopenFile()
		case <-ctx.Done():
			l.close()
			return
		}
	}
}

// add formats rec into the buffer, writing the buffer out when it is full.
func (l *Log) add(rec *record) {
	l.buf = l.format(l.buf, rec)
	l.pending++
	if len(l.buf) >= bufSize {
		l.flush()
	}
}

// addQueued takes what else is queued, but at most a queue's worth: when lines come in as
// fast as they can be written (a slow disk), reopen requests and ticks still get their turn.
// It reports whether it emptied the queue.
func (l *Log) addQueued() (emptied bool) {
	for range cap(l.queue) {
		select {
		case l.cur = <-l.queue:
			l.add(&l.cur)
		default:
			return true
		}
	}
	return false
}

var newline = []byte{'\n'}

// flush writes the buffered lines. Lines not wholly written count as write errors; the
// next write begins on a new line, so a half-written line cannot swallow the next one.
func (l *Log) flush() {
	if l.pending == 0 {
		return
	}
	n, err := l.writeOut()
	if err != nil {
		done := uint64(bytes.Count(l.buf[:n], newline))
		l.written.Add(done)
		l.writeErrors.Add(l.pending - done)
		l.lost += l.pending - done
		if n > 0 && l.buf[n-1] != '\n' {
			l.brokenLine = true
		}
		if !l.failing {
			l.failing = true
			l.log.Error("cannot write the access log; its lines are lost until writing works again",
				"destination", l.opts.Destination, "error", err.Error())
		}
	} else {
		l.written.Add(l.pending)
		if l.failing {
			l.failing = false
			l.log.Info("access log writes work again", "destination", l.opts.Destination, "lost", l.lost)
			l.lost = 0
		}
	}
	// Whether it worked or not, the writer moved: requests may wait for room again.
	if l.stalled.Load() {
		l.stalled.Store(false)
	}
	l.pending = 0
	if cap(l.buf) > 4*bufSize { // one huge line must not pin a huge buffer
		l.buf = make([]byte, 0, bufSize)
	} else {
		l.buf = l.buf[:0]
	}
}

// writeOut writes the buffer and returns how many of its bytes were written.
func (l *Log) writeOut() (int, error) {
	if l.brokenLine {
		if _, err := l.out.Write(newline); err != nil {
			return 0, err
		}
		l.brokenLine = false
	}
	n, err := l.out.Write(l.buf)
	if err == nil && n < len(l.buf) {
		err = io.ErrShortWrite
	}
	return n, err
}

func (l *Log) reopenFile() {
	if l.file == nil {
		l.log.Debug("reopen asked for, but the access log is not a file", "destination", l.opts.Destination)
		return
	}
	f, regular, err := openFile(l.opts.Destination)
	if err != nil {
		l.log.Error("cannot reopen the access log; still writing to the file it had open", "error", err.Error())
		return
	}
	if err := l.file.Close(); err != nil {
		l.log.Warn("closing the access log before reopening it", "path", l.opts.Destination, "error", err.Error())
	}
	l.file, l.out, l.regular = f, f, regular
	l.brokenLine = false // a new file starts clean
	l.log.Info("access log reopened", "path", l.opts.Destination)
}

// reportDrops logs dropped lines, at most once per dropReportEvery unless final.
func (l *Log) reportDrops() {
	total := l.dropped.Load()
	if total == l.reported || time.Since(l.reportedAt) < dropReportEvery {
		return
	}
	why := "the queue was full"
	if !l.drop {
		why = fmt.Sprintf("the destination was stuck for over %v", l.opts.StallTimeout)
	}
	l.log.Warn("access log lines dropped", "why", why, "dropped", total-l.reported,
		"dropped_total", total, "when_full", l.policy())
	l.reported, l.reportedAt = total, time.Now()
}

func (l *Log) policy() string {
	if l.drop {
		return WhenFullDrop
	}
	return WhenFullBlock
}

// close ends the worker: it takes what is still queued, writes it, fsyncs and closes the
// file, and logs the totals.
func (l *Log) close() {
	close(l.stopped)
	for done := false; !done; {
		select {
		case l.cur = <-l.queue:
			l.add(&l.cur)
		default:
			done = true
		}
	}
	l.flush()
	if l.file != nil {
		if l.regular {
			if err := l.file.Sync(); err != nil {
				l.log.Error("cannot fsync the access log", "path", l.opts.Destination, "error", err.Error())
			}
		}
		if err := l.file.Close(); err != nil {
			l.log.Error("cannot close the access log", "path", l.opts.Destination, "error", err.Error())
		}
	}
	written, dropped, errs := l.Written(), l.Dropped(), l.WriteErrors()
	level := hclog.Info
	if dropped > 0 || errs > 0 {
		level = hclog.Warn
	}
	l.log.Log(level, "access log closed", "destination", l.opts.Destination, "written", written,
		"dropped", dropped, "write_errors", errs)
}
