package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// WriteText prints a result for people: throughput, latency percentiles and
// errors by status code, per kind of call.
func (r *Result) WriteText(w io.Writer) {
	what := r.Op
	if r.NewKeys {
		what += " (a new key per call)"
	}
	if r.Server == "redis" {
		what += " against Redis"
	}
	fmt.Fprintf(w, "%s for %s, %d connections, %d in flight, %d-byte values\n",
		what, r.Elapsed.Round(time.Millisecond), r.Conns, r.Workers, r.ValueLen)
	if r.Rate > 0 {
		fmt.Fprintf(w, "open loop: %.0f calls/s offered, %.0f done; latency counts from each call's scheduled start\n",
			r.Rate, r.Total.PerSecond)
		if r.Total.PerSecond < 0.95*r.Rate {
			fmt.Fprintln(w, "the server (or -c) fell behind the offered rate: latency includes the backlog")
		}
	}
	ops := make([]string, 0, len(r.PerOp))
	for op := range r.PerOp {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	fmt.Fprintf(w, "%-6s %10s %12s %10s %10s %10s %10s  %s\n", "op", "calls", "calls/s", "p50", "p90", "p99", "max", "errors")
	for _, op := range ops {
		o := r.PerOp[op]
		fmt.Fprintf(w, "%-6s %10d %12.0f %10s %10s %10s %10s  %s\n", op, o.Calls, o.PerSecond,
			round(o.P50), round(o.P90), round(o.P99), round(o.Max), o.errorText())
		if o.Items > 0 {
			fmt.Fprintf(w, "%-6s %10d items, %.0f items/s, %.1f MB/s\n", "", o.Items, o.ItemsPerSec,
				float64(o.ItemBytes)/r.Elapsed.Seconds()/1e6)
		}
	}
}

func (o *OpResult) errorText() string {
	if len(o.Errors) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(o.Errors))
	for _, c := range o.ErrorCodes() {
		parts = append(parts, fmt.Sprintf("%s=%d", c, o.Errors[c]))
	}
	return strings.Join(parts, " ")
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
