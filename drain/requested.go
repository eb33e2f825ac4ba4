package drain

// Requested is closed once a drain has been asked for (Drain, Force, a trapped signal or
// Run's context ending): work that a drain should cut short, such as an app restart that
// has not switched over yet, selects on it.
func (d *Drainer) Requested() <-chan struct{} { return d.requested }
