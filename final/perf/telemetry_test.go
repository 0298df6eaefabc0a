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
	"google.golang.org/grpc/stats"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/devstack"
	"grpcworkshop/final/server"
	"grpcworkshop/final/telemetry"
)

// BenchmarkTelemetryOverhead is BenchmarkStackVsEmptyHandler's Get (TLS
// off) with telemetry configured five ways, one sub-benchmark each:
// "off"; "metrics", gRPC's per-call metrics from telemetry's tap and
// interceptors and the service's own (what the binaries run); "plugin",
// the same metrics from grpc-go's stats/opentelemetry plugin on the server
// instead; "trace0", metrics and tracing sampled at 0% (spans created, not
// recorded); "trace100", metrics and tracing sampled at 100% (spans
// batched to an exporter that drops them). In each, the replica (with its
// own Accounts) and an empty handler take turns in every round, so drift
// on the machine hits both; "ratio" is the replica's throughput over the
// empty handler's, "cpu-ratio" the same from the CPU time per call.
func BenchmarkTelemetryOverhead(b *testing.B) {
	variants := []struct {
		name string
		tel  func(b *testing.B) *telemetry.Telemetry
	}{
		{"off", func(*testing.B) *telemetry.Telemetry { return nil }},
		{"metrics", func(b *testing.B) *telemetry.Telemetry { return newTelemetry(b, nil) }},
		{"plugin", func(b *testing.B) *telemetry.Telemetry {
			tel, err := telemetry.New(context.Background(), telemetry.Options{Service: "cache", NoMetrics: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
			return tel
		}},
		{"trace0", func(b *testing.B) *telemetry.Telemetry {
			return newTelemetry(b, sdktrace.ParentBased(sdktrace.NeverSample()))
		}},
		{"trace100", func(b *testing.B) *telemetry.Telemetry {
			return newTelemetry(b, sdktrace.ParentBased(sdktrace.AlwaysSample()))
		}},
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	creds := insecure.NewCredentials()
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
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
					if v.name == "plugin" {
						c.ExtraServerOptions = append(c.ExtraServerOptions, grpcotel.ServerOption(grpcotel.Options{
							MetricsOptions: grpcotel.MetricsOptions{
								MeterProvider: tel.MeterProvider(),
								Metrics:       stats.NewMetricSet(grpcotel.ServerCallStartedMetricName, grpcotel.ServerCallDurationMetricName),
							},
						}))
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(st.Stop)
			stack := target{v.name, dial(b, st.CacheAddrs[0], creds, false)}
			drive(b, stack.cache, "Store", keySpace) // prefill, and warm up
			empty := target{"empty", dial(b, startEmpty(b, st, false), creds, false)}
			drive(b, empty.cache, "Get", keySpace)

			b.ResetTimer()
			took, cpu := map[string]time.Duration{}, map[string]time.Duration{}
			per := max(b.N/rounds, 1)
			for r := range rounds {
				for i, t := range []target{stack, empty} {
					if r%2 == 1 { // a different order every round
						t = []target{empty, stack}[i]
					}
					before := cpuTime(b)
					took[t.name] += drive(b, t.cache, "Get", per)
					cpu[t.name] += cpuTime(b) - before
				}
			}
			b.StopTimer()
			calls := float64(per * rounds)
			b.ReportMetric(calls/took["empty"].Seconds(), "empty-calls/s")
			b.ReportMetric(took["empty"].Seconds()/took[v.name].Seconds(), "ratio")
			// The same ratio from the CPU time the process (client and
			// servers) spent per call: what the throughput ratio would be
			// if nothing else ran on the machine.
			b.ReportMetric(float64(cpu["empty"])/float64(cpu[v.name]), "cpu-ratio")
			b.ReportMetric(float64(cpu[v.name].Microseconds())/calls, "cpu-µs/call")
			b.ReportMetric(float64(cpu["empty"].Microseconds())/calls, "empty-cpu-µs/call")
		})
	}
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
