package perf_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/telemetry"
)

// BenchmarkTelemetryOverhead is BenchmarkStackVsEmptyHandler's Get (TLS
// off) with telemetry configured five ways, one sub-benchmark each:
// "off"; "metrics", gRPC's per-call metrics from telemetry's tap and
// interceptors and the service's own (what the binaries run); "plugin",
// the same metrics from grpc-go's stats/opentelemetry plugin on the server
// instead; "trace0", metrics and tracing sampled at 0% (spans created, not
// recorded); "trace100", metrics and tracing sampled at 100% (spans
// batched to an exporter that drops them). In each, the replica (with its
// own Accounts) and an empty handler take turns, 40 rounds, so drift on
// the machine hits both; "ratio" is the replica's throughput over the
// empty handler's, "cpu-ratio" the same from the CPU time per call, each
// the median of the rounds' ratios.
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
					c.Limits.Rate, c.Limits.TenantRate = rate.Inf, rate.Inf
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
			var ratios, cpuRatios []float64 // per pair of turns
			per := max(b.N/telemetryRounds, 1)
			for r := range telemetryRounds {
				var tookR, cpuR [2]time.Duration // stack, empty
				for i := range 2 {
					j := i
					if r%2 == 1 { // a different order every round
						j = 1 - i
					}
					t := []target{stack, empty}[j]
					before := cpuTime(b)
					tookR[j] = drive(b, t.cache, "Get", per)
					cpuR[j] = cpuTime(b) - before
					took[t.name] += tookR[j]
					cpu[t.name] += cpuR[j]
				}
				ratios = append(ratios, tookR[1].Seconds()/tookR[0].Seconds())
				cpuRatios = append(cpuRatios, float64(cpuR[1])/float64(cpuR[0]))
			}
			b.StopTimer()
			calls := float64(per * telemetryRounds)
			b.ReportMetric(calls/took["empty"].Seconds(), "empty-calls/s")
			// The median over the rounds of each round's ratio: a burst of
			// other work on the machine (or a slower spell of the VM)
			// during one turn moves one round, not the result.
			b.ReportMetric(median(ratios), "ratio")
			// The same ratio from the CPU time the process (client and
			// servers) spent per call: what the throughput ratio would be
			// if nothing else ran on the machine.
			b.ReportMetric(median(cpuRatios), "cpu-ratio")
			b.ReportMetric(float64(cpu[v.name].Microseconds())/calls, "cpu-µs/call")
			b.ReportMetric(float64(cpu["empty"].Microseconds())/calls, "empty-cpu-µs/call")
		})
	}
}

// telemetryRounds is how many times the replica and the empty handler take
// turns: many short turns, so that the machine's drift hits both alike.
const telemetryRounds = 40

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
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
