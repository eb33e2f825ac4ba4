package instance

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/drainproxy/drainproxy/accesslog"
	"github.com/drainproxy/drainproxy/drain"
	"github.com/drainproxy/drainproxy/internal/swap"
)

// logSwitch is the access log as the drain observes it: the log a reload opened last, or
// none. Each log is a generation (package swap): a swap retires the old one, whose worker
// is ended (it writes what is queued and closes its file) once the last Observe call that
// holds it returns.
type logSwitch struct {
	cur atomic.Pointer[logGen] // nil before the first swap

	// mu guards the counters of the logs swapped out, so that the totals never go down:
	// a retired log counts in retiring until its worker is ended, then in the sums.
	mu                   sync.Mutex
	retiring             []*logGen
	dropped, writeErrors uint64
}

// logGen is one access log (nil: none) and the end of its worker.
type logGen struct {
	l    *accesslog.Log
	stop context.CancelFunc
	gen  *swap.Gen
}

// swap makes l (nil: none) the log and runs its worker in workers.
func (s *logSwitch) swap(l *accesslog.Log, workers *drain.Group) {
	g := &logGen{l: l, stop: func() {}}
	g.gen = swap.New(func() { s.retired(g) })
	if l != nil {
		ctx, cancel := context.WithCancel(context.Background())
		g.stop = cancel
		workers.Go("access-log", func(group context.Context) {
			defer context.AfterFunc(group, cancel)()
			l.Run(ctx)
		})
	}
	s.mu.Lock()
	old := s.cur.Swap(g)
	if old != nil {
		s.retiring = append(s.retiring, old)
	}
	s.mu.Unlock()
	if old != nil {
		old.gen.Retire() // may call s.retired at once: after the unlock
	}
}

// retired ends g's worker once nothing observes through it any more, and keeps its counts.
func (s *logSwitch) retired(g *logGen) {
	g.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retiring = slices.DeleteFunc(s.retiring, func(r *logGen) bool { return r == g })
	if g.l != nil {
		s.dropped += g.l.Dropped()
		s.writeErrors += g.l.WriteErrors()
	}
}

// use runs fn with the current log, counted as a use of it; not at all when there is none.
func (s *logSwitch) use(fn func(*accesslog.Log)) {
	for {
		g := s.cur.Load()
		if g == nil {
			return
		}
		if g.gen.Acquire() {
			defer g.gen.Release()
			if g.l != nil {
				fn(g.l)
			}
			return
		}
	}
}

func (s *logSwitch) Observe(x *drain.Exchange) { s.use(func(l *accesslog.Log) { l.Observe(x) }) }

// Reopen reopens the current log's file (SIGUSR1).
func (s *logSwitch) Reopen() { s.use((*accesslog.Log).Reopen) }

// counts sums count over the logs swapped out and the current one.
func (s *logSwitch) counts(done uint64, count func(*accesslog.Log) uint64) uint64 {
	n := done
	for _, g := range s.retiring {
		if g.l != nil {
			n += count(g.l)
		}
	}
	if g := s.cur.Load(); g != nil && g.l != nil {
		n += count(g.l)
	}
	return n
}

func (s *logSwitch) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts(s.dropped, (*accesslog.Log).Dropped)
}

func (s *logSwitch) WriteErrors() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts(s.writeErrors, (*accesslog.Log).WriteErrors)
}
