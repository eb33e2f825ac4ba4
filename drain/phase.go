package drain

// Phase is where the process is in its life. Phases only move forward.
type Phase int32

const (
	// PhaseStarting: listeners are being bound and the upstream is not yet known healthy.
	PhaseStarting Phase = iota
	// PhaseReady: serving; readiness is true.
	PhaseReady
	// PhaseDraining: a drain was requested; readiness is false, listeners still accept
	// (the drain delay), every response asks the client to close its connection.
	PhaseDraining
	// PhaseStopping: listeners are closed; in-flight requests and upgraded connections
	// finish within the grace period.
	PhaseStopping
	// PhaseStopped: nothing is served any more; workers flush and the process exits.
	PhaseStopped
)

var phaseNames = [...]string{"starting", "ready", "draining", "stopping", "stopped"}

func (p Phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return "unknown"
	}
	return phaseNames[p]
}
