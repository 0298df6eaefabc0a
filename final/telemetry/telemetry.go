// Package telemetry wires OpenTelemetry into the servers and their clients:
// gRPC's standard per-call metrics (gRFC A66: grpc.server.call.duration
// from the server's tap and interceptors, calls.go; grpc.client.attempt.duration
// and the rest from grpc-go's stats/opentelemetry plugin) and the
// service's own instruments, exported for Prometheus on the admin port;
// traces (grpc-go's plugin) with W3C trace context carried in gRPC
// metadata, exported over OTLP only when the standard OTEL_* variables ask
// for it; and log records that carry the trace and the tenant.
//
// Nothing here is global: each server gets its own registry and providers,
// so several servers in one process (devstack, tests) keep their numbers
// apart.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	experimental "google.golang.org/grpc/experimental/opentelemetry"
	"google.golang.org/grpc/stats"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Options configures one server's telemetry. The zero value (plus Service)
// gives metrics for Prometheus and tracing as the OTEL_* environment says.
type Options struct {
	// Service is the process role, "cache" or "accounts": the prefix of the
	// service's own metric names and the default service.name.
	Service string
	// Instance identifies this process (the replica id): service.instance.id.
	Instance string
	// NoMetrics leaves gRPC's per-call metrics out, on servers and
	// clients (to measure their cost); the service's own instruments still
	// count.
	NoMetrics bool
	// TracerProvider, when set, replaces the one built from the environment
	// (tests use an in-memory exporter; a team may bring its own).
	TracerProvider trace.TracerProvider
}

// scope is the meters' instrumentation scope: this module's path (the one
// gonew gave a service made from final), read from this package's path.
var scope = strings.TrimSuffix(reflect.TypeFor[Telemetry]().PkgPath(), "/telemetry")

// Telemetry is one server's metrics registry and tracer.
type Telemetry struct {
	opts       Options
	registry   *prometheus.Registry
	meters     *sdkmetric.MeterProvider
	tracer     trace.TracerProvider
	propagator propagation.TextMapPropagator
	shutdown   []func(context.Context) error

	// Metrics are the service's own instruments.
	Metrics *Metrics
	// calls records the servers' per-call metrics (calls.go).
	calls *serverCalls
}

// New builds the registry, the meter provider and, if the environment or
// opts ask for it, the tracer provider. Nothing is started or exported
// until something reads /metrics or a span ends.
func New(ctx context.Context, opts Options) (*Telemetry, error) {
	if opts.Service == "" {
		return nil, errors.New("telemetry: no service name")
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(opts.Service)}
	if opts.Instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(opts.Instance))
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the defaults.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	t := &Telemetry{opts: opts, registry: prometheus.NewRegistry(), propagator: propagation.TraceContext{}}
	t.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	exp, err := otelprom.New(
		otelprom.WithRegisterer(t.registry),
		// One scope per metric name here: the scope labels would only
		// repeat on every series.
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithReader(exp), sdkmetric.WithResource(res)}
	// The Prometheus text format that /metrics serves carries no
	// exemplars, so offering every measurement to an exemplar reservoir
	// (the SDK's default when a span is sampled) is work for nothing.
	// OTEL_METRICS_EXEMPLAR_FILTER, when set, still decides.
	if os.Getenv("OTEL_METRICS_EXEMPLAR_FILTER") == "" {
		mopts = append(mopts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	}
	t.meters = sdkmetric.NewMeterProvider(mopts...)
	t.shutdown = append(t.shutdown, t.meters.Shutdown)
	if t.Metrics, err = newMetrics(t.meters.Meter(scope), opts.Service); err != nil {
		return nil, err
	}
	var callMeters metric.MeterProvider
	if !opts.NoMetrics {
		callMeters = t.meters
	}
	if t.calls, err = newServerCalls(callMeters, t.Metrics); err != nil {
		return nil, err
	}

	t.tracer = opts.TracerProvider
	if t.tracer == nil {
		tp, err := tracerFromEnv(ctx, res)
		if err != nil {
			return nil, err
		}
		if tp != nil {
			t.tracer = tp
			t.shutdown = append(t.shutdown, tp.Shutdown)
		}
	}
	return t, nil
}

// tracerFromEnv returns nil, and tracing costs nothing, unless
// OTEL_TRACES_EXPORTER or an OTLP endpoint variable asks for traces. The
// exporters read the other OTEL_EXPORTER_OTLP_* variables themselves, and
// the provider reads OTEL_TRACES_SAMPLER(_ARG) (default: parent-based,
// always on).
func tracerFromEnv(ctx context.Context, res *resource.Resource) (*sdktrace.TracerProvider, error) {
	kind := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")))
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	switch {
	case kind == "none", kind == "" && !endpoint:
		return nil, nil
	case kind != "" && kind != "otlp":
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", kind)
	}
	exp, err := otlpExporter(ctx)
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// Registry is where every metric of this server is collected; register a
// team's own collectors here to serve them on the same /metrics.
func (t *Telemetry) Registry() *prometheus.Registry { return t.registry }

// MeterProvider is this server's meter provider, for a team's own
// instruments.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meters }

// TracerProvider is this server's tracer provider, or nil when tracing is
// off.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracer }

// MetricsHandler serves the registry in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{Registry: t.registry})
}

// clientMetrics are gRPC's per-call client metrics without the
// message-size histograms: two histograms fewer to record on every
// attempt, for numbers (bytes per call) this service does not need; add
// them back with grpcotel.DefaultMetrics() if yours does.
var clientMetrics = stats.NewMetricSet(
	grpcotel.ClientAttemptStartedMetricName, grpcotel.ClientAttemptDurationMetricName,
	grpcotel.ClientCallDurationMetricName,
)

// traceOptions are the plugin's tracing options, or none when tracing is
// off.
func (t *Telemetry) traceOptions() experimental.TraceOptions {
	if t.tracer == nil {
		return experimental.TraceOptions{}
	}
	return experimental.TraceOptions{TracerProvider: t.tracer, TextMapPropagator: t.propagator}
}

// ServerOptions instrument a gRPC server: gRPC's per-call server metrics
// and the rejection counter (every error the service chose, by its
// ErrorInfo reason) in the outermost interceptors (calls.go), and, when
// tracing is on, grpc-go's tracing plugin: a span per call, continuing the
// caller's W3C trace context. Install Tap too, and call RegisterMethods
// once the services are registered.
func (t *Telemetry) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(t.calls.unary),
		grpc.ChainStreamInterceptor(t.calls.stream),
	}
	if t.tracer != nil {
		opts = append(opts, grpcotel.ServerOption(grpcotel.Options{TraceOptions: t.traceOptions()}))
	}
	return opts
}

// Tap wraps a server's tap handle (nil: none) as the server's
// grpc.InTapHandle: a call starts there, as soon as its headers are read,
// and calls the tap refuses are counted as ended there, by their reason.
// The HTTP path, which gRPC runs no tap for, runs it too (web.Options.Tap).
// On a nil Telemetry it returns next.
func (t *Telemetry) Tap(next tap.ServerInHandle) tap.ServerInHandle {
	if t == nil {
		return next
	}
	return t.calls.tap(next)
}

// RegisterMethods names the methods a server serves (pass the
// *grpc.Server once every service is registered): the grpc.method label
// of their calls. A call of any other method is counted as "other", as
// gRFC A66 asks, so that a client cannot make up label values.
func (t *Telemetry) RegisterMethods(s interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}) {
	t.calls.register(s.GetServiceInfo())
}

// EndCall ends the call ctx carries (the context the wrapped tap returned)
// with st, the status its caller received, unless the interceptors ended
// it already. The HTTP listener calls it after grpc.Server.ServeHTTP
// returns: gRPC ends a call whose request it cannot read (a body that did
// not transcode) before any interceptor runs. On a nil Telemetry, nothing.
func (t *Telemetry) EndCall(ctx context.Context, st *status.Status) {
	if t == nil {
		return
	}
	t.calls.endOpen(ctx, st)
}

// DialOption instruments a client connection (the replica's connection to
// Accounts, and to its peers): grpc-go's plugin, with per-attempt metrics,
// and spans whose context travels to the server as a W3C traceparent
// header.
func (t *Telemetry) DialOption() grpc.DialOption {
	o := grpcotel.Options{TraceOptions: t.traceOptions()}
	if !t.opts.NoMetrics {
		o.MetricsOptions.MeterProvider = t.meters
		o.MetricsOptions.Metrics = clientMetrics
	}
	return grpcotel.DialOption(o)
}

// Shutdown flushes spans still buffered and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}
