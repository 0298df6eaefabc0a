package telemetry

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Metrics are the service's own instruments, beside grpc's per-call ones.
// Every label has a small, fixed set of values: no keys, no tenants, no
// peer addresses. All methods are safe on a nil *Metrics (telemetry off).
type Metrics struct {
	rejections metric.Int64Counter
	// auth counts by result in plain atomics, read at scrape time: one is
	// bumped on every call, and an atomic add costs a fraction of a
	// counter's Add.
	auth         [len(authResults)]atomic.Int64
	reservations metric.Int64Counter
	reserveTime  metric.Float64Histogram
	leases       metric.Int64Counter
	dumped       metric.Int64Counter
	meter        metric.Meter
	prefix       string

	// Attribute options built once per label value: recording with a
	// prebuilt set allocates nothing.
	// Copied on write: the hot path reads it without a lock.
	sets atomic.Pointer[map[label]metric.MeasurementOption]
	mu   sync.Mutex // serializes writers of sets
}

type label struct{ key, value, key2, value2 string }

func newMetrics(m metric.Meter, prefix string) (*Metrics, error) {
	x := &Metrics{meter: m, prefix: prefix}
	var err error
	if x.rejections, err = m.Int64Counter(prefix+".rejections",
		metric.WithDescription("Calls refused with an error the service chose, by its ErrorInfo reason."),
		metric.WithUnit("{call}")); err != nil {
		return nil, err
	}
	if _, err = m.Int64ObservableCounter(prefix+".auth.lookups",
		metric.WithDescription("How calls were authenticated: hit (cached), miss (asked Accounts), unknown (no such token), error (Accounts did not answer), stale (served from an expired entry because Accounts did not answer)."),
		metric.WithUnit("{lookup}"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for i, r := range authResults {
				if n := x.auth[i].Load(); n > 0 {
					o.Observe(n, x.set("result", r))
				}
			}
			return nil
		})); err != nil {
		return nil, err
	}
	if x.reservations, err = m.Int64Counter(prefix+".quota.reservations",
		metric.WithDescription("Quota reservations at Accounts by result: granted, refused (over quota), error."),
		metric.WithUnit("{reservation}")); err != nil {
		return nil, err
	}
	if x.reserveTime, err = m.Float64Histogram(prefix+".quota.reservation.duration",
		metric.WithDescription("Time to reserve quota at Accounts."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)); err != nil {
		return nil, err
	}
	if x.leases, err = m.Int64Counter(prefix+".lease.renewals",
		metric.WithDescription("Lease reports to Accounts by result: ok, error."),
		metric.WithUnit("{renewal}")); err != nil {
		return nil, err
	}
	if x.dumped, err = m.Int64Counter(prefix+".dump.items",
		metric.WithDescription("Items sent by Dump streams."),
		metric.WithUnit("{item}")); err != nil {
		return nil, err
	}
	return x, nil
}

func (m *Metrics) set(key, value string) metric.MeasurementOption {
	return m.set2(key, value, "", "")
}

func (m *Metrics) set2(key, value, key2, value2 string) metric.MeasurementOption {
	l := label{key, value, key2, value2}
	if sets := m.sets.Load(); sets != nil {
		if o, ok := (*sets)[l]; ok {
			return o
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[label]metric.MeasurementOption{}
	if sets := m.sets.Load(); sets != nil {
		maps.Copy(next, *sets)
	}
	o, ok := next[l]
	if !ok {
		kvs := []attribute.KeyValue{attribute.String(key, value)}
		if key2 != "" {
			kvs = append(kvs, attribute.String(key2, value2))
		}
		o = metric.WithAttributeSet(attribute.NewSet(kvs...))
		next[l] = o
		m.sets.Store(&next)
	}
	return o
}

// Rejected counts one call (or connection) refused for reason, an
// ErrorInfo reason; scope says what the limit applied to ("service",
// "tenant", or "" when that is not a question). Code that refuses outside
// a call (a connection cap) calls it directly.
func (m *Metrics) Rejected(ctx context.Context, reason, scope string) {
	if m == nil {
		return
	}
	m.rejections.Add(ctx, 1, m.set2("reason", reason, "scope", scope))
}

var authResults = [...]string{"hit", "miss", "unknown", "error", "stale"}

// AuthLookup counts how one call's token was resolved: "hit", "miss",
// "unknown", "error" or "stale" (auth.Authenticator's Observe).
func (m *Metrics) AuthLookup(result string) {
	if m == nil {
		return
	}
	for i, r := range authResults {
		if r == result {
			m.auth[i].Add(1)
			return
		}
	}
}

// Reservation records one quota reservation at Accounts: "granted",
// "refused" or "error", and how long it took.
func (m *Metrics) Reservation(ctx context.Context, result string, d time.Duration) {
	if m == nil {
		return
	}
	o := m.set("result", result)
	m.reservations.Add(ctx, 1, o)
	m.reserveTime.Record(ctx, d.Seconds(), o)
}

// LeaseRenewal counts one lease report: "ok" or "error".
func (m *Metrics) LeaseRenewal(ctx context.Context, result string) {
	if m == nil {
		return
	}
	m.leases.Add(ctx, 1, m.set("result", result))
}

// Dumped counts items sent by a Dump stream.
func (m *Metrics) Dumped(ctx context.Context, n int) {
	if m == nil || n == 0 {
		return
	}
	m.dumped.Add(ctx, int64(n))
}

// Gauges registers gauges read when /metrics is scraped, so they cost
// nothing between scrapes: name (without the service prefix), unit,
// description, and a function that returns the current value.
type Gauge struct {
	Name, Unit, Description string
	Value                   func() int64
}

// Observe registers gauges; call it once per server.
func (m *Metrics) Observe(gauges ...Gauge) error {
	if m == nil {
		return nil
	}
	for _, g := range gauges {
		value := g.Value
		if _, err := m.meter.Int64ObservableGauge(m.prefix+"."+g.Name,
			metric.WithDescription(g.Description), metric.WithUnit(g.Unit),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(value())
				return nil
			})); err != nil {
			return fmt.Errorf("gauge %s: %w", g.Name, err)
		}
	}
	return nil
}

// Reason is the ErrorInfo reason of a status error ("" if it has none),
// and the scope of the limit it names: the kind of its "subject" metadata,
// the word before the first space or colon ("service" for the global rate
// limit, "tenant" for a tenant's rate or quota), so the label never holds
// a tenant's name.
func Reason(err error) (reason, scope string) {
	st, ok := status.FromError(err)
	if !ok {
		return "", ""
	}
	return reasonOf(st)
}

func reasonOf(st *status.Status) (reason, scope string) {
	if st == nil {
		return "", ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			subject := info.GetMetadata()["subject"]
			if i := strings.IndexAny(subject, " :"); i >= 0 {
				subject = subject[:i]
			}
			return info.GetReason(), subject
		}
	}
	return "", ""
}
