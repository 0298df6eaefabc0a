package telemetry

import (
	"context"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// serverCalls records gRFC A66's two per-call server metrics,
// grpc.server.call.started and grpc.server.call.duration, under the names,
// units, descriptions, bucket boundaries and labels (grpc.method,
// grpc.status) that grpc-go's stats/opentelemetry plugin gives them, and
// counts rejections by their ErrorInfo reason.
//
// It records from the server's tap handle (where a call starts: its
// headers were just read) and from the outermost interceptor (where it
// ends), not from a stats handler as the plugin does. Installing any stats
// handler makes gRPC allocate an event for every header, message and
// trailer of every call and copy the call's metadata; with the plugin's
// own attribute sets built per call on top, that took the stack's Get from
// 0.87-0.89 to 0.74-0.76 of the empty handler's throughput by CPU
// (BenchmarkTelemetryOverhead, "plugin"). Here the attribute sets are
// built once per registered method and status code, and a call costs one
// context and two recordings.
//
// What this measures differently from the plugin (final/docs/operations.md,
// Observability): a call's duration ends when its handler returns, before
// gRPC writes the response and status (the plugin's ends after); calls the
// tap refuses are recorded (the plugin never sees them); calls gRPC itself
// ends between the tap and the interceptors (a message over the size
// limit, a client that cancels first, an unknown method) are counted as
// started but have no duration, as unknown methods have none with the
// plugin either. TestServerMetricsMatchGRPCPlugin checks the rest: the
// same series and counts for the same calls.
type serverCalls struct {
	started  metric.Int64Counter // nil: metrics off, rejections only
	duration metric.Float64Histogram
	m        *Metrics

	// methods are the registered methods (by full name, "/svc/method"),
	// set by Telemetry.RegisterMethods; any other is "other", so a client
	// cannot grow the label's values.
	methods atomic.Pointer[map[string]*methodSets]
	other   *methodSets
	mu      sync.Mutex // serializes register
}

// methodSets are one method's attribute sets: the method alone (started),
// and the method with each status code (duration), each as the one-option
// slice the instruments take, so that passing it allocates nothing.
type methodSets struct {
	method  string
	started []metric.AddOption
	ended   [codes.Unauthenticated + 1][]metric.RecordOption
}

// statusNames are the status labels A66 uses (grpc-go's canonical names,
// which codes.Code.String does not give).
var statusNames = [...]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

func statusName(c codes.Code) string {
	if int(c) < len(statusNames) {
		return statusNames[c]
	}
	return "CODE(" + strconv.FormatUint(uint64(c), 10) + ")"
}

func newMethodSets(method string) *methodSets {
	s := &methodSets{method: method}
	name := attribute.String("grpc.method", method)
	s.started = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(name))}
	for c := range s.ended {
		s.ended[c] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(name,
			attribute.String("grpc.status", statusName(codes.Code(c)))))}
	}
	return s
}

// The server metrics' meter: the plugin's own name, so the series have
// the same origin whichever recorded them.
const grpcMeter = "grpc-go"

func newServerCalls(mp metric.MeterProvider, m *Metrics) (*serverCalls, error) {
	h := &serverCalls{m: m, other: newMethodSets("other")}
	if mp == nil {
		return h, nil
	}
	meter := mp.Meter(grpcMeter, metric.WithInstrumentationVersion(grpc.Version))
	var err error
	if h.started, err = meter.Int64Counter(grpcotel.ServerCallStartedMetricName,
		metric.WithUnit("{call}"), metric.WithDescription("Number of server calls started.")); err != nil {
		return nil, err
	}
	if h.duration, err = meter.Float64Histogram(grpcotel.ServerCallDurationMetricName,
		metric.WithUnit("s"),
		metric.WithDescription("End-to-end time taken to complete a call from server transport's perspective."),
		metric.WithExplicitBucketBoundaries(grpcotel.DefaultLatencyBounds...)); err != nil {
		return nil, err
	}
	return h, nil
}

// register adds the methods of services to the known ones.
func (h *serverCalls) register(services map[string]grpc.ServiceInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := map[string]*methodSets{}
	if cur := h.methods.Load(); cur != nil {
		maps.Copy(next, *cur)
	}
	for svc, info := range services {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			if next[full] == nil {
				next[full] = newMethodSets(strings.TrimPrefix(full, "/"))
			}
		}
	}
	h.methods.Store(&next)
}

func (h *serverCalls) lookup(fullMethod string) *methodSets {
	if known := h.methods.Load(); known != nil {
		if s := (*known)[fullMethod]; s != nil {
			return s
		}
	}
	return h.other
}

// call is a call's context as the tap stamped it: the parent, and when
// and what was called. One allocation per call, for both.
type call struct {
	context.Context
	start time.Time
	sets  *methodSets
	// ended is set by the first end: the HTTP listener ends the calls
	// that gRPC ended before the interceptors (EndHTTP), and must not end
	// the others again.
	ended atomic.Bool
	// elsewhere: another server answered this call and counted its
	// refusal (CountedElsewhere).
	elsewhere atomic.Bool
}

// CountedElsewhere marks the call ctx belongs to as answered by another
// server, which counted its refusal, if any: a replica that forwarded a
// call to the key's owner returns the owner's status, and the owner has
// counted it, so across the replicas each refusal is counted once. A
// no-op for a context without a call (telemetry off).
func CountedElsewhere(ctx context.Context) {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		c.elsewhere.Store(true)
	}
}

type callKey struct{}

func (c *call) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// begin counts a call started now.
func (h *serverCalls) begin(ctx context.Context, fullMethod string) *call {
	c := &call{Context: ctx, start: time.Now(), sets: h.lookup(fullMethod)}
	if h.started != nil {
		h.started.Add(ctx, 1, c.sets.started...)
	}
	return c
}

// end records a call that ended with st (nil: OK), once.
func (h *serverCalls) end(ctx context.Context, c *call, st *status.Status) {
	if !c.ended.CompareAndSwap(false, true) {
		return
	}
	code := st.Code()
	if h.started != nil {
		h.duration.Record(ctx, time.Since(c.start).Seconds(), c.sets.status(code)...)
	}
	switch {
	case code == codes.OK, code == codes.Canceled, code == codes.DeadlineExceeded:
		// The caller gave up, or its deadline passed: not a refusal,
		// whatever details the status carries.
	case c.elsewhere.Load():
	default:
		if r, scope := reasonOf(st); r != "" {
			h.m.Rejected(ctx, r, scope)
		}
	}
}

// handlerStatus is the status gRPC sends for what a handler returned: a
// status error's own, a context error's DEADLINE_EXCEEDED or CANCELLED,
// and UNKNOWN for anything else (server.go, processRPC).
func handlerStatus(err error) *status.Status {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.FromContextError(err)
}

// tapStatus is the status gRPC sends for a tap's refusal: its own if it
// is a status error, else PERMISSION_DENIED (internal/transport,
// http2_server.go).
func tapStatus(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.New(codes.PermissionDenied, err.Error())
}

func (s *methodSets) status(c codes.Code) []metric.RecordOption {
	if int(c) < len(s.ended) {
		return s.ended[c]
	}
	// Codes beyond the defined ones: only a handler of this server can
	// send one, so their number is bounded by the code.
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
		attribute.String("grpc.method", s.method), attribute.String("grpc.status", statusName(c))))}
}

// tap wraps the server's own tap handle (nil: none): a call starts here,
// and if next refuses it, it ends here too.
func (h *serverCalls) tap(next tap.ServerInHandle) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		c := h.begin(ctx, info.FullMethodName)
		if next == nil {
			return c, nil
		}
		out, err := next(c, info)
		if err != nil {
			h.end(ctx, c, tapStatus(err))
		}
		return out, err
	}
}

// callOf is the call the tap began, or a call beginning now if no tap ran
// (a server whose options skipped Telemetry.Tap).
func (h *serverCalls) callOf(ctx context.Context, fullMethod string) *call {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		return c
	}
	return h.begin(ctx, fullMethod)
}

func (h *serverCalls) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c := h.callOf(ctx, info.FullMethod)
	resp, err := handler(ctx, req)
	h.end(ctx, c, handlerStatus(err))
	return resp, err
}

func (h *serverCalls) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	c := h.callOf(ctx, info.FullMethod)
	err := handler(srv, ss)
	h.end(ctx, c, handlerStatus(err))
	return err
}

// endOpen ends the call in ctx with st if nothing ended it yet.
func (h *serverCalls) endOpen(ctx context.Context, st *status.Status) {
	if c, ok := ctx.Value(callKey{}).(*call); ok && !c.ended.Load() {
		h.end(ctx, c, st)
	}
}
