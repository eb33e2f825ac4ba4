package drain

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/drainproxy/drainproxy/internal/logdur"
)

// The drain's steps, as /status and `drainproxy status` show them.
const (
	StepDelay         = "delay"
	StepStopAccepting = "stop_accepting"
	StepWait          = "wait"
	StepDeadline      = "deadline"
	StepStopApp       = "stop_app"
	StepFlush         = "flush"
	StepDone          = "done"
)

// DrainClock is where a drain is: its step and the times that bound it.
type DrainClock struct {
	Reason      string    `json:"reason"`
	Started     time.Time `json:"started"`
	Step        string    `json:"step"`
	StepStarted time.Time `json:"step_started"`
	// Deadline is when the grace period ends and what is left is closed. Until the
	// listeners stop it is an estimate: the delay's end (DelayMax for "auto") plus Grace.
	Deadline time.Time `json:"grace_deadline"`
	Forced   bool      `json:"forced"`
}

// enterStep publishes the drain's new step. delayed: the delay step runs (the process had
// been ready), for the deadline estimate.
func (d *Drainer) enterStep(step string, at time.Time, delayed bool) {
	c := DrainClock{Step: step, StepStarted: at.UTC(), Forced: Closed(d.forced)}
	if prev := d.clock.Load(); prev != nil {
		c.Reason, c.Started, c.Deadline = prev.Reason, prev.Started, prev.Deadline
	} else {
		c.Reason, _ = d.reason.Load().(string)
		c.Started = at.UTC()
		c.Deadline = at.Add(d.opts.Grace).UTC()
		if delayed && d.opts.DelayAuto {
			c.Deadline = c.Deadline.Add(d.delayMax())
		} else if delayed {
			c.Deadline = c.Deadline.Add(d.opts.Delay)
		}
	}
	if step == StepStopAccepting {
		c.Deadline = at.Add(d.opts.Grace).UTC()
	}
	d.clock.Store(&c)
}

// logProgress logs, every ProgressInterval until the returned stop is called, what the
// wait step still waits for: counts, the oldest few, and the time left to the deadline.
// `kubectl logs` of a stuck pod then says what it is stuck on.
func (d *Drainer) logProgress(grace context.Context) (stop func()) {
	every := d.opts.ProgressInterval
	if every == 0 {
		every = 5 * time.Second
	}
	if every < 0 {
		return func() {}
	}
	deadline, _ := grace.Deadline()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-grace.Done():
				return
			case <-tick.C:
				d.logProgressLine(deadline)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// progressOldest is how many of the oldest in-flight exchanges a progress line names.
const progressOldest = 3

func (d *Drainer) logProgressLine(deadline time.Time) {
	in := d.Inflight(progressOldest)
	oldest := make([]string, 0, len(in.Entries))
	for _, e := range in.Entries {
		oldest = append(oldest, describeEntry(e))
	}
	d.log.Info("drain progress: waiting", "requests", in.Requests, "streams", in.Streams, "upgraded", in.Upgraded,
		"connections", d.t.conns.Load(), "oldest", strings.Join(oldest, "; "),
		"left", time.Until(deadline).Round(100*time.Millisecond).String())
}

// describeEntry is one in-flight exchange in a log line: GET /path 12.3s id=… (waits for …).
func describeEntry(e InflightEntry) string {
	s := fmt.Sprintf("%s %s %s %.1fs", e.Protocol, e.Method, e.Path, float64(e.Age))
	if e.ID != "" {
		s += " id=" + e.ID
	}
	return s + " (" + e.WaitsFor + ")"
}

// lastFinished is the last exchange that finished during a drain, for the line that says
// the wait is over.
type lastFinished struct {
	what string
	at   time.Time
}

// noteFinished records x as the latest exchange to finish during the drain. It allocates,
// but only during a drain.
func (d *Drainer) noteFinished(x *exchange) {
	e := InflightEntry{Protocol: x.proto, Method: x.Request.Method, Path: x.path, WaitsFor: "done",
		Age: Seconds(x.Duration.Seconds())}
	x.shard.mu.Lock()
	e.ID = x.reqID
	x.shard.mu.Unlock()
	d.last.Store(&lastFinished{what: strings.TrimSuffix(describeEntry(e), " (done)"), at: time.Now()})
}

// lastFinishedFields are the fields of the line that ends the wait: how long it took and
// the exchange that finished last.
func (d *Drainer) lastFinishedFields(took time.Duration) []any {
	f := []any{"took", logdur.Format(took)}
	if l := d.last.Load(); l != nil {
		f = append(f, "last", l.what, "last_finished_ago", logdur.Since(l.at))
	}
	return f
}
