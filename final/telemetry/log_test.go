package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"grpcworkshop.example/final/rpc"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// A JSON log line of a call carries its trace and span ids and the tenant
// noted after authentication, though it is written with the outer context.
func TestJSONLogLinesCarryTraceSpanAndTenant(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", slog.LevelInfo)
	require.NoError(t, err)

	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	outer, span := tp.Tracer("test").Start(WithCallNote(context.Background()), "call")
	defer span.End()
	inner := context.WithValue(outer, struct{}{}, "deeper in the chain")
	NoteTenant(inner, "gopher")
	log.InfoContext(outer, "server call", "method", rpc.Cache_Get_FullMethodName)

	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	assert.Equal(t, span.SpanContext().TraceID().String(), line["trace_id"])
	assert.Equal(t, span.SpanContext().SpanID().String(), line["span_id"])
	assert.Equal(t, "gopher", line["tenant"])
	assert.Equal(t, rpc.Cache_Get_FullMethodName, line["method"])

	_, err = NewLogger(&buf, "yaml", slog.LevelInfo)
	assert.ErrorContains(t, err, `log format "yaml"`)
}
