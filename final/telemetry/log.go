package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// NewLogger builds the process's logger: format "text" (default) or
// "json", at level, with every record that has a context carrying the
// call's trace_id and span_id and, once authentication has named it, the
// tenant.
func NewLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	o := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch format {
	case "", "text":
		h = slog.NewTextHandler(w, o)
	case "json":
		h = slog.NewJSONHandler(w, o)
	default:
		return nil, fmt.Errorf("log format %q: use text or json", format)
	}
	return slog.New(ContextHandler(h)), nil
}

// ContextHandler wraps h so that records logged with a context get the
// trace_id and span_id of the span in it and the tenant noted for the call.
func ContextHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(contextHandler); ok {
		return h
	}
	return contextHandler{h}
}

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
		}
		if t := TenantOf(ctx); t != "" {
			r.AddAttrs(slog.String("tenant", t))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(as)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}

// The tenant is known only after authentication, deep inside the
// interceptor chain, but the call's log line is written by the outermost
// interceptor with the outer context. So an outer interceptor puts an empty
// note in the context (WithCallNote), the step after authentication fills
// it in (NoteTenant), and the log line reads it (TenantOf).
type callNote struct {
	context.Context // the call's: the note is its context, one allocation
	mu              sync.Mutex
	tenant          string
}

type callNoteKey struct{}

func (n *callNote) Value(key any) any {
	if key == (callNoteKey{}) {
		return n
	}
	return n.Context.Value(key)
}

func noteOf(ctx context.Context) *callNote {
	n, _ := ctx.Value(callNoteKey{}).(*callNote)
	return n
}

// WithCallNote returns ctx with an empty note for the call.
func WithCallNote(ctx context.Context) context.Context {
	if noteOf(ctx) != nil {
		return ctx
	}
	return &callNote{Context: ctx}
}

// NoteTenant records the call's tenant in the note ctx carries, and as an
// attribute of the call's span. Tenants go on spans and log lines, never
// on metrics (unbounded).
func NoteTenant(ctx context.Context, tenant string) {
	if n := noteOf(ctx); n != nil {
		n.mu.Lock()
		n.tenant = tenant
		n.mu.Unlock()
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tenantKey.String(tenant))
	}
}

// TenantOf is the tenant noted for the call, or "".
func TenantOf(ctx context.Context) string {
	if n := noteOf(ctx); n != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.tenant
	}
	return ""
}

var tenantKey = attribute.Key("tenant")

// TenantAttribute is the span attribute that names the call's tenant.
func TenantAttribute(tenant string) attribute.KeyValue { return tenantKey.String(tenant) }
