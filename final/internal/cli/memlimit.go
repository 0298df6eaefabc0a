package cli

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// MemoryLimit sets the Go runtime's soft memory limit to ratio of the
// container's memory limit (its cgroup's, read by automemlimit), so the
// garbage collector works harder as the heap nears it instead of letting
// it grow to twice the live data (GOGC) and the kernel kill the process.
// GOMEMLIMIT, Go's own variable, wins when set; ratio 0 leaves the limit
// alone; no container limit (a developer's machine) sets none. It logs
// the limit in force at level and returns it (math.MaxInt64: none).
func MemoryLimit(ratio float64, log *slog.Logger, level slog.Level) (int64, error) {
	if ratio < 0 || ratio > 1 || math.IsNaN(ratio) {
		return 0, fmt.Errorf("memory limit ratio %v: must be between 0 (off) and 1", ratio)
	}
	var limit int64
	source := "GOMEMLIMIT"
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		limit = debug.SetMemoryLimit(-1)
	case ratio == 0:
		limit, source = debug.SetMemoryLimit(-1), "off"
	default:
		var err error
		limit, err = memlimit.Set(memlimit.WithRatio(ratio), memlimit.WithProvider(memlimit.FromCgroup))
		source = fmt.Sprintf("%.2f of the container's limit", ratio)
		if err != nil {
			// Not in a cgroup we can read: run without a limit, as before.
			log.Log(context.Background(), level, "memory limit: the container's is not readable, none set", "error", err)
			return debug.SetMemoryLimit(-1), nil
		}
	}
	if limit == math.MaxInt64 {
		log.Log(context.Background(), level, "memory limit: none", "source", source)
	} else {
		log.Log(context.Background(), level, "memory limit", "bytes", limit, "source", source)
	}
	return limit, nil
}
