package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/rpc"
)

// ctxErrCache answers every Get with a plain context error, as much Go
// handler code does (return ctx.Err()): gRPC sends it as DEADLINE_EXCEEDED
// or CANCELLED, not UNKNOWN.
type ctxErrCache struct{ rpc.UnimplementedCacheServer }

func (ctxErrCache) Get(_ context.Context, r *rpc.GetReq) (*rpc.GetResp, error) {
	if r.GetKey() == "canceled" {
		return nil, fmt.Errorf("lookup: %w", context.Canceled)
	}
	return nil, context.DeadlineExceeded
}

// A handler that returns a plain (or wrapped) context error is recorded
// with the status gRPC sends for it, as grpc-go's plugin records it:
// DEADLINE_EXCEEDED or CANCELLED, not UNKNOWN.
func TestPlainContextErrorsAreRecordedWithTheStatusGRPCSends(t *testing.T) {
	ours, err := New(context.Background(), Options{Service: "ours"})
	require.NoError(t, err)
	theirs, err := New(context.Background(), Options{Service: "theirs", NoMetrics: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, ours.Shutdown(context.Background()))
		assert.NoError(t, theirs.Shutdown(context.Background()))
	})
	register := func(tel *Telemetry) func(*grpc.Server) {
		return func(s *grpc.Server) {
			rpc.RegisterCacheServer(s, ctxErrCache{})
			if tel != nil {
				tel.RegisterMethods(s)
			}
		}
	}
	plugin := grpcotel.ServerOption(grpcotel.Options{MetricsOptions: grpcotel.MetricsOptions{
		MeterProvider: theirs.MeterProvider(),
		Metrics:       stats.NewMetricSet(grpcotel.ServerCallStartedMetricName, grpcotel.ServerCallDurationMetricName),
	}})
	for _, s := range []struct {
		tel  *Telemetry
		opts []grpc.ServerOption
	}{
		{ours, append(ours.ServerOptions(), grpc.InTapHandle(ours.Tap(nil)))},
		{theirs, []grpc.ServerOption{plugin}},
	} {
		conn, ended := serveCtxErr(t, register(s.tel), s.opts...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := rpc.NewCacheClient(conn)
		_, err := c.Get(ctx, &rpc.GetReq{Key: "deadline"})
		require.Equal(t, codes.DeadlineExceeded, status.Code(err), "what the client sees")
		_, err = c.Get(ctx, &rpc.GetReq{Key: "canceled"})
		require.Equal(t, codes.Canceled, status.Code(err), "what the client sees")
		for range 2 {
			<-ended
		}
	}
	want := grpcServerSeries(t, theirs)["grpc_server_call_duration_seconds"].counts
	got := grpcServerSeries(t, ours)["grpc_server_call_duration_seconds"].counts
	assert.Equal(t, uint64(1), want["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=DEADLINE_EXCEEDED"], "the plugin: %v", want)
	assert.Equal(t, want, got)
}

// serveCtxErr serves what register registers with opts, as serveFake
// does, and returns a client connection and the channel of ended calls.
func serveCtxErr(t *testing.T, register func(*grpc.Server), opts ...grpc.ServerOption) (*grpc.ClientConn, chan struct{}) {
	t.Helper()
	done := ends{make(chan struct{}, 100)}
	srv := grpc.NewServer(append(opts, grpc.StatsHandler(done))...)
	register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn, done.c
}

// A tap handle that refuses with a plain error: gRPC sends
// PERMISSION_DENIED for it (internal/transport/http2_server.go), and the
// tap wrapper records that.
func TestAPlainTapRefusalIsRecordedWithTheStatusGRPCSends(t *testing.T) {
	tel, err := New(context.Background(), Options{Service: "cache"})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, tel.Shutdown(context.Background())) })
	refuse := func(context.Context, *tap.Info) (context.Context, error) { return nil, errors.New("not you") }
	conn, _ := serveFake(t, func(s *grpc.Server) { tel.RegisterMethods(s) },
		append(tel.ServerOptions(), grpc.InTapHandle(tel.Tap(refuse)))...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = rpc.NewCacheClient(conn).Get(ctx, &rpc.GetReq{Key: "a"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "what the client sees")
	d := grpcServerSeries(t, tel)["grpc_server_call_duration_seconds"].counts
	assert.Equal(t, map[string]uint64{"grpc_method=" + methodLabel(rpc.Cache_Get_FullMethodName) + ",grpc_status=PERMISSION_DENIED": 1}, d)
}
