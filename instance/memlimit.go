package instance

import (
	"errors"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/hashicorp/go-hclog"

	"github.com/drainproxy/drainproxy/gcfloor"
)

// MemLimitRatio is the share of the cgroup's memory limit given to Go's runtime as its soft
// limit (GOMEMLIMIT). The rest is for what the runtime does not count: the binary's code
// and memory the kernel charges to the container (page cache of the access log, sockets).
const MemLimitRatio = 0.9

// setMemoryLimit tells Go's runtime how much memory it may use, so that in a container a
// burst of garbage is collected before the kernel's OOM killer ends the process (mid-drain,
// perhaps). GOMEMLIMIT in the environment wins; otherwise the limit is MemLimitRatio of the
// cgroup's memory limit (AUTOMEMLIMIT=0.8 sets another ratio, AUTOMEMLIMIT=off none). Go
// already takes GOMAXPROCS from the cgroup's CPU quota.
func setMemoryLimit(getenv func(string) string, log hclog.Logger) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "GOMEMLIMIT", v, "GOMEMLIMIT_bytes", debug.SetMemoryLimit(-1))
		return
	}
	if getenv("AUTOMEMLIMIT") == "off" {
		log.Debug("AUTOMEMLIMIT=off: no memory limit for the runtime")
		return
	}
	cgroup, err := memlimit.FromCgroup()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit):
		log.Debug("the cgroup sets no memory limit")
		return
	case err != nil:
		log.Debug("no cgroup memory limit found", "reason", err.Error())
		return
	}
	limit, err := memlimit.Set(memlimit.WithRatio(MemLimitRatio), memlimit.WithProvider(memlimit.Limit(cgroup)))
	if err != nil {
		log.Warn("cannot give the runtime a memory limit from the cgroup's; set GOMEMLIMIT or a valid AUTOMEMLIMIT ratio", "cgroup_limit_bytes", cgroup, "error", err.Error())
		return
	}
	if limit <= 0 || limit == math.MaxInt64 {
		return
	}
	log.Info("memory limit from the cgroup", "cgroup_limit_bytes", cgroup, "GOMEMLIMIT_bytes", limit)
}

// startGCFloor keeps the garbage collector from collecting a small heap dozens of times a
// second under load (package gcfloor), unless GOGC in the environment says how it should
// run. It returns what undoes it.
func startGCFloor(floor int64, getenv func(string) string, log hclog.Logger) (stop func()) {
	if floor <= 0 {
		return func() {}
	}
	if v := getenv("GOGC"); v != "" {
		log.Debug("GOGC is set, so the heap floor is off", "GOGC", v)
		return func() {}
	}
	return gcfloor.Start(uint64(floor)).Stop
}
