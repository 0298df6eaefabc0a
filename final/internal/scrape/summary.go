package scrape

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteSummary prints the numbers a person wants from one server's
// /metrics without running Prometheus: calls by method and status with
// their mean latency, rejections by reason, and the service's own counters
// and gauges (prefix "cache" or "accounts"). Counters are totals since the
// process started.
func WriteSummary(w io.Writer, f Families, prefix string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "method\tstatus\tcalls\tmean")
	calls := f["grpc_server_call_duration_seconds"]
	if calls != nil {
		type row struct{ method, status string }
		seen := map[row]bool{}
		var rows []row
		for _, m := range calls.GetMetric() {
			var r row
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "grpc_method":
					r.method = l.GetValue()
				case "grpc_status":
					r.status = l.GetValue()
				}
			}
			if !seen[r] {
				seen[r] = true
				rows = append(rows, r)
			}
		}
		byKey := map[string]row{}
		for _, r := range rows {
			byKey[r.method+" "+r.status] = r
		}
		for _, k := range sortedKeys(byKey) {
			r := byKey[k]
			n := f.Value("grpc_server_call_duration_seconds", "grpc_method", r.method, "grpc_status", r.status)
			mean := ""
			if n > 0 {
				sum := f.Sum("grpc_server_call_duration_seconds", "grpc_method", r.method, "grpc_status", r.status)
				mean = time.Duration(sum / n * float64(time.Second)).Round(time.Microsecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\n", r.method, r.status, n, mean)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	by := func(title, family, label string) {
		m := f.By(family, label)
		if len(m) == 0 {
			return
		}
		var parts []string
		for _, k := range sortedKeys(m) {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
		}
		fmt.Fprintf(w, "%-18s %s\n", title, strings.Join(parts, ", "))
	}
	one := func(title, family string) {
		if fam := f[family]; fam != nil {
			fmt.Fprintf(w, "%-18s %.0f\n", title, f.Value(family))
		}
	}
	by("rejections", prefix+"_rejections_total", "reason")
	one("keys", prefix+"_keys")
	one("bytes", prefix+"_bytes")
	by("auth lookups", prefix+"_auth_lookups_total", "result")
	by("reservations", prefix+"_quota_reservations_total", "result")
	if n := f.Value(prefix + "_quota_reservation_duration_seconds"); n > 0 {
		mean := time.Duration(f.Sum(prefix+"_quota_reservation_duration_seconds") / n * float64(time.Second))
		fmt.Fprintf(w, "%-18s %s\n", "reservation mean", mean.Round(time.Microsecond))
	}
	by("lease renewals", prefix+"_lease_renewals_total", "result")
	one("dump items", prefix+"_dump_items_total")
	one("tenants", prefix+"_tenants")
	one("slots held", prefix+"_slots")
	one("leases", prefix+"_leases")
	if fam := f[prefix+"_draining"]; fam != nil {
		state := "no"
		if f.Value(prefix+"_draining") > 0 {
			state = "yes"
		}
		fmt.Fprintf(w, "%-18s %s\n", "draining", state)
	}
	return nil
}
