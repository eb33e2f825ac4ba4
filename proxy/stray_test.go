package proxy_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drainproxy/drainproxy/internal/badupstream"
	"github.com/drainproxy/drainproxy/proxy"
)

// strayDelay is how long after its answer the poisoning upstream sends the stray response
// (the 0.2 s).
const strayDelay = 200 * time.Millisecond

// poisonGaps are the waits between the poisoning answer and the next request: shorter than
// strayDelay poisons a reused connection, longer finds the stray on the idle connection.
var poisonGaps = []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 350 * time.Millisecond}

// exchangeRecord is one plain request of a poisoning test: when the client sent it, and
// whether it got another request's bytes (wrong) or no proper answer (failed).
type exchangeRecord struct {
	start         time.Time
	wrong, failed bool
	detail        string
}

// poisonPath is the poisoning request.
var poisonPath = badupstream.LateStray + "?delay=" + strayDelay.String()

// plainExchange sends "ok" and records what came back.
func (f *badFront) plainExchange(t *testing.T, transport bool) exchangeRecord {
	return f.recordExchange(t, "ok", transport)
}

// recordExchange sends name (ok, or poisonPath: its answer is tagged with its own nonce
// too) and records what came back.
func (f *badFront) recordExchange(t *testing.T, name string, transport bool) exchangeRecord {
	rec := exchangeRecord{start: time.Now()}
	o, foreign := f.exchange(t, name, http.MethodGet, transport)
	switch {
	case len(foreign) > 0:
		rec.wrong, rec.detail = true, fmt.Sprintf("got %q", foreign[0])
	case o.status != 200 || o.body != "nonce:"+o.nonce:
		rec.failed, rec.detail = true, fmt.Sprintf("got %d %q", o.status, o.body)
	}
	return rec
}

// checkStrayPromise asserts what docs/requests.md promises for the mode: with keep-alive
// off no exchange gets another's response; with it on, none that the client started after
// drainproxy first saw a stray (the quarantine began). Failed exchanges (no answer, or a
// 502) are allowed only with keep-alive on, and only before that moment too.
func checkStrayPromise(t *testing.T, keepAlive bool, pe *proxy.ProtocolErrors, recs []exchangeRecord) (wrong, failed int) {
	t.Helper()
	first := pe.First()
	for _, r := range recs {
		if !r.wrong && !r.failed {
			continue
		}
		if r.wrong {
			wrong++
		} else {
			failed++
		}
		switch {
		case !keepAlive:
			t.Errorf("keepalive = false: an exchange went wrong: %s", r.detail)
		case first.IsZero():
			t.Errorf("an exchange went wrong and no stray was ever detected: %s", r.detail)
		case !r.start.Before(first):
			t.Errorf("an exchange started %v after the first stray was detected went wrong: %s",
				r.start.Sub(first), r.detail)
		}
	}
	return wrong, failed
}

// TestStrayResponseSequential is the poisoning test, one request at a time: the
// upstream answers, and 200 ms later sends a second complete response; the next request
// follows at each gap, then two more. Three rounds per gap, on the inline path (GET) and
// the Transport's (POST), with keep-alive on (detection and quarantine) and off.
func TestStrayResponseSequential(t *testing.T) {
	for _, keepAlive := range []bool{true, false} {
		for _, transport := range []bool{false, true} {
			for _, gap := range poisonGaps {
				name := fmt.Sprintf("keepalive=%v/transport=%v/gap=%v", keepAlive, transport, gap)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					pe := &proxy.ProtocolErrors{}
					f := newBadFrontWith(t, false, proxy.Options{DisableKeepAlives: !keepAlive, ProtocolErrors: pe})
					var recs []exchangeRecord
					for range 3 {
						a := f.send(t, poisonPath, http.MethodGet, transport)
						time.Sleep(gap)
						for range 3 {
							recs = append(recs, f.plainExchange(t, transport))
						}
						f.waitUpstream(t, a.nonce)
						time.Sleep(20 * time.Millisecond) // the displaced answers come in
					}
					wrong, failed := checkStrayPromise(t, keepAlive, pe, recs)
					t.Logf("%s: %d of %d next requests wrong, %d failed; protocol errors (idle early unrequested) %v", t.Name(), wrong, len(recs), failed, pe.Counts())
				})
			}
		}
	}
}

// TestStrayResponseConcurrent: 10 clients x 60 plain requests, and every 20th request of
// each client a poisoning one (30 in all), on each path and mode.
func TestStrayResponseConcurrent(t *testing.T) {
	const clients, perClient = 10, 60
	for _, keepAlive := range []bool{true, false} {
		for _, transport := range []bool{false, true} {
			t.Run(fmt.Sprintf("keepalive=%v/transport=%v", keepAlive, transport), func(t *testing.T) {
				t.Parallel()
				pe := &proxy.ProtocolErrors{}
				f := newBadFrontWith(t, false, proxy.Options{DisableKeepAlives: !keepAlive, ProtocolErrors: pe})
				var mu sync.Mutex
				var recs []exchangeRecord
				var wg sync.WaitGroup
				for c := range clients {
					wg.Go(func() {
						for i := range perClient {
							if (i+c)%20 == 0 {
								r := f.recordExchange(t, poisonPath, transport)
								mu.Lock()
								recs = append(recs, r)
								mu.Unlock()
							}
							r := f.plainExchange(t, transport)
							mu.Lock()
							recs = append(recs, r)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				wrong, failed := checkStrayPromise(t, keepAlive, pe, recs)
				t.Logf("%s: %d of %d requests wrong, %d failed; protocol errors (idle early unrequested) %v", t.Name(), wrong, len(recs), failed, pe.Counts())
				if keepAlive && wrong == 0 && strings.Contains(f.log.String(), "stray") {
					t.Log("no wrong answer: the quarantine began before any stray reached a request")
				}
			})
		}
	}
}
