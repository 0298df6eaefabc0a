package perf_test

import (
	"context"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials/insecure"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/devstack"
	"grpcworkshop/final/server"
	"grpcworkshop/final/telemetry"
)

// BenchmarkTelemetryOverhead is BenchmarkStackVsEmptyHandler's Get (TLS
// off) for four replicas at once, each with its own Accounts: telemetry
// off; metrics (gRPC's OpenTelemetry plugin and the service's own); metrics
// and tracing sampled at 100% (spans batched to an exporter that drops
// them); metrics and tracing sampled at 0% (spans created, not recorded).
// All four and the empty handler take turns in every round, so drift on
// the machine hits each alike; each "<variant>-ratio" is its throughput
// over the empty handler's.
func BenchmarkTelemetryOverhead(b *testing.B) {
	variants := []struct {
		name string
		tel  func(b *testing.B) *telemetry.Telemetry
	}{
		{"off", func(*testing.B) *telemetry.Telemetry { return nil }},
		{"metrics", func(b *testing.B) *telemetry.Telemetry { return newTelemetry(b, nil) }},
		{"trace100", func(b *testing.B) *telemetry.Telemetry {
			return newTelemetry(b, sdktrace.ParentBased(sdktrace.AlwaysSample()))
		}},
		{"trace0", func(b *testing.B) *telemetry.Telemetry {
			return newTelemetry(b, sdktrace.ParentBased(sdktrace.NeverSample()))
		}},
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	creds := insecure.NewCredentials()
	var targets []target
	var first *devstack.Stack
	for _, v := range variants {
		tel := v.tel(b)
		st, err := devstack.Start(devstack.Config{
			CertDir:      b.TempDir(),
			AccountsAddr: "127.0.0.1:0",
			CacheAddrs:   []string{"127.0.0.1:0"},
			Logger:       quiet,
			Directory:    accounts.Accounts(map[string]accounts.Account{token: {MaxCacheKeys: 10 * keySpace}}),
			TuneCache: func(_ int, c *server.CacheConfig) {
				c.Rate, c.TenantRate = rate.Inf, rate.Inf
				c.TLS = nil
				c.Telemetry = tel
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(st.Stop)
		if first == nil {
			first = st
		}
		t := target{v.name, dial(b, st.CacheAddrs[0], creds, false)}
		drive(b, t.cache, "Store", keySpace) // prefill, and warm up
		targets = append(targets, t)
	}
	empty := target{"empty", dial(b, startEmpty(b, first, false), creds, false)}
	drive(b, empty.cache, "Get", keySpace)
	targets = append(targets, empty)

	b.ResetTimer()
	took, cpu := map[string]time.Duration{}, map[string]time.Duration{}
	per := max(b.N/rounds, 1)
	for r := range rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)] // a different order every round
			before := cpuTime(b)
			took[t.name] += drive(b, t.cache, "Get", per)
			cpu[t.name] += cpuTime(b) - before
		}
	}
	b.StopTimer()
	calls := float64(per * rounds)
	emptyRate := calls / took["empty"].Seconds()
	b.ReportMetric(emptyRate, "empty-calls/s")
	for _, v := range variants {
		b.ReportMetric(calls/took[v.name].Seconds()/emptyRate, v.name+"-ratio")
		// The same ratio from the CPU time the process (client and
		// servers) spent per call: what the throughput ratio would be if
		// nothing else ran on the machine.
		b.ReportMetric(float64(cpu["empty"])/float64(cpu[v.name]), v.name+"-cpu-ratio")
		b.ReportMetric(float64(cpu[v.name].Microseconds())/calls, v.name+"-cpu-µs/call")
	}
	b.ReportMetric(float64(cpu["empty"].Microseconds())/calls, "empty-cpu-µs/call")
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func newTelemetry(b *testing.B, sampler sdktrace.Sampler) *telemetry.Telemetry {
	o := telemetry.Options{Service: "cache", Instance: "bench"}
	if sampler != nil {
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithSampler(sampler),
			sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		)
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) }) // the caller's to stop
		o.TracerProvider = tp
	}
	tel, err := telemetry.New(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	return tel
}
