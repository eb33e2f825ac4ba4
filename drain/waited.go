package drain

// Waited is closed once the drain has finished waiting for in-flight requests and
// upgraded connections (PhaseStopped: they finished, or the deadline closed them), before
// the supervised app is stopped. A pod's app container waits on it in its preStop hook
// (admin GET /drained), so that kubelet stops the app only after the proxy in front of it
// has nothing left to send it.
func (d *Drainer) Waited() <-chan struct{} { return d.waited }
