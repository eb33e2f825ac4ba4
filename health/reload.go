package health

import "net/url"

// SetOptions applies new check settings (a configuration reload): path, interval,
// timeout and thresholds take effect from the next check on; u is the upstream as it is
// now (the proxy's, which a restart may have moved). Upstream and Logger in opts are
// ignored. The health state carries over.
func (c *Checker) SetOptions(u *url.URL, opts Options) {
	opts.Logger = c.log
	opts.Upstream = u
	opts = withDefaults(opts)
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.o()
	c.opts.Store(&opts)
	if prev.Path != opts.Path || prev.GRPC != opts.GRPC || prev.GRPCService != opts.GRPCService {
		c.probe.Store(c.probeFor(u))
	}
	c.log.Info("health check settings changed", "path", opts.Path, "interval", opts.Interval.String(),
		"timeout", opts.Timeout.String(), "healthy_threshold", opts.HealthyThreshold,
		"unhealthy_threshold", opts.UnhealthyThreshold)
}
