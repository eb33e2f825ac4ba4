package drain

import "time"

// autoDelay is the delay step with drain.delay = "auto": it keeps serving until no new
// connection has arrived for Quiet, but at least DelayMin and at most DelayMax after the
// drain began. Load balancers and kube-proxy keep sending new connections until our
// removal from the endpoints reaches them; once new connections stop, it has. A quiet
// period counts from the drain request (or from when readiness fails, with
// ReadinessFailDelay), so a process nobody connects to waits Quiet.
//
// It is only as good as the traffic is dense: with fewer than one new connection per
// Quiet, a router that still sends to us may look quiet. The caller logs why it ended.
func (d *Drainer) autoDelay(begun time.Time) {
	quiet, minDelay, maxDelay := d.quiet(), d.opts.DelayMin, d.delayMax()
	// Routers learn of us from failing readiness: with ReadinessFailDelay, that is later.
	quietFrom := begun.UnixNano()
	if until := d.readyUntil.Load(); until != 0 {
		quietFrom = until
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		last := time.Unix(0, max(d.t.lastNew.Load(), quietFrom))
		end, why := last.Add(quiet), "no new connection for drain.quiet"
		if e := begun.Add(minDelay); e.After(end) {
			end, why = e, "drain.delay_min reached (it was quiet before)"
		}
		if e := begun.Add(maxDelay); !e.After(end) {
			end, why = e, "drain.delay_max reached (new connections kept arriving)"
		}
		wait := time.Until(end)
		if wait <= 0 {
			fields := []any{"took", time.Since(begun).String(), "why", why, "quiet", quiet.String()}
			if n := d.t.lastNew.Load(); n != 0 {
				fields = append(fields, "last_new_connection_ago", time.Since(time.Unix(0, n)).Round(time.Millisecond).String())
			} else {
				fields = append(fields, "last_new_connection_ago", "none since the drain began")
			}
			d.log.Info("drain delay over", fields...)
			return
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-d.forced:
			d.log.Info("drain delay over", "took", time.Since(begun).String(), "why", "forced")
			return
		}
	}
}

func (d *Drainer) quiet() time.Duration {
	if d.opts.Quiet <= 0 {
		return time.Second
	}
	return d.opts.Quiet
}

func (d *Drainer) delayMax() time.Duration {
	if d.opts.DelayMax <= 0 {
		return 10 * time.Second
	}
	return d.opts.DelayMax
}
