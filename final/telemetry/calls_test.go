package telemetry

import (
	"context"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/rpc"
)

// fakeCache answers by key: "missing" is NotFound, "bad" InvalidArgument,
// "code-N" status code N, anything else OK; Dump sends two items.
type fakeCache struct{ rpc.UnimplementedCacheServer }

func (fakeCache) Get(_ context.Context, r *rpc.GetReq) (*rpc.GetResp, error) {
	switch r.GetKey() {
	case "missing":
		return nil, status.Error(codes.NotFound, "no such key")
	case "bad":
		return nil, status.Error(codes.InvalidArgument, "bad key")
	}
	if n, ok := strings.CutPrefix(r.GetKey(), "code-"); ok {
		c, _ := strconv.Atoi(n)
		return nil, status.Error(codes.Code(c), "as asked")
	}
	return &rpc.GetResp{Val: []byte("v")}, nil
}

func (fakeCache) Store(context.Context, *rpc.StoreReq) (*rpc.StoreResp, error) {
	return &rpc.StoreResp{}, nil
}

func (fakeCache) Dump(_ *rpc.DumpReq, s grpc.ServerStreamingServer[rpc.DumpItem]) error {
	for _, k := range []string{"a", "b"} {
		if err := s.Send(&rpc.DumpItem{Key: k}); err != nil {
			return err
		}
	}
	return nil
}

// ends counts the calls that ended on a server; registered after the
// handler under test, it sees a call end once that handler recorded it.
type ends struct{ c chan struct{} }

func (e ends) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (e ends) HandleRPC(_ context.Context, s stats.RPCStats) {
	if end, ok := s.(*stats.End); ok && !end.Client {
		e.c <- struct{}{}
	}
}
func (e ends) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (e ends) HandleConn(context.Context, stats.ConnStats)                       {}

// serveFake serves fakeCache and health with opts, and returns a client
// connection and the channel of ended calls.
func serveFake(t *testing.T, register func(*grpc.Server), opts ...grpc.ServerOption) (*grpc.ClientConn, chan struct{}) {
	t.Helper()
	done := ends{make(chan struct{}, 100)}
	srv := grpc.NewServer(append(opts, grpc.StatsHandler(done))...)
	rpc.RegisterCacheServer(srv, fakeCache{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	if register != nil {
		register(srv)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn, done.c
}

// traffic makes the same calls on conn: OK, NotFound and InvalidArgument
// Gets, one Get ending in each status code (and one beyond them), Stores,
// a Dump, a health Check, and methods no server registered.
// It waits until the server has ended all of them.
func traffic(t *testing.T, conn *grpc.ClientConn, ended chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := rpc.NewCacheClient(conn)
	calls := 0
	for _, k := range []string{"a", "b", "missing", "missing", "bad"} {
		_, _ = c.Get(ctx, &rpc.GetReq{Key: k})
		calls++
	}
	for code := codes.Canceled; code <= codes.Unauthenticated+1; code++ {
		_, err := c.Get(ctx, &rpc.GetReq{Key: "code-" + strconv.Itoa(int(code))})
		require.Equal(t, code, status.Code(err))
		calls++
	}
	for range 3 {
		_, err := c.Store(ctx, &rpc.StoreReq{Key: "a", Val: []byte("v")})
		require.NoError(t, err)
		calls++
	}
	d, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	for {
		if _, err := d.Recv(); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
	}
	calls++
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	calls++
	// gRPC answers these itself: they start, but never end for a stats
	// handler (no End event), with the plugin as here.
	err = conn.Invoke(ctx, "/"+rpc.Cache_ServiceDesc.ServiceName+"/NoSuchMethod", &rpc.GetReq{}, &rpc.GetResp{})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	err = conn.Invoke(ctx, "/made.up.Service/Call", &rpc.GetReq{}, &rpc.GetResp{})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	for range calls {
		select {
		case <-ended:
		case <-ctx.Done():
			t.Fatal("the server did not end every call")
		}
	}
}

// series is a family's samples without their values that depend on
// timing: each series' labels with its count (a counter's value, a
// histogram's sample count), and the histogram's bucket bounds.
type series struct {
	help, unit string
	kind       dto.MetricType
	counts     map[string]uint64
	bounds     []float64
}

func grpcServerSeries(t *testing.T, tel *Telemetry) map[string]series {
	t.Helper()
	fams, err := tel.Registry().Gather()
	require.NoError(t, err)
	out := map[string]series{}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "grpc_server_") {
			continue
		}
		s := series{help: f.GetHelp(), unit: f.GetUnit(), kind: f.GetType(), counts: map[string]uint64{}}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			key := strings.Join(labels, ",")
			switch {
			case m.GetCounter() != nil:
				s.counts[key] = uint64(m.GetCounter().GetValue())
			case m.GetHistogram() != nil:
				s.counts[key] = m.GetHistogram().GetSampleCount()
				var bounds []float64
				for _, b := range m.GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				s.bounds = bounds
			}
		}
		out[f.GetName()] = s
	}
	return out
}

// The servers' own tap and interceptors record the same series as grpc-go's
// stats/opentelemetry plugin, which they replace on servers for its cost:
// the same metric names, help, units, types, bucket bounds, label names
// and values (registered methods by name, others as "other"; canonical
// status names), and the same counts, for the same calls.
func TestServerMetricsMatchGRPCPlugin(t *testing.T) {
	ours, err := New(context.Background(), Options{Service: "ours"})
	require.NoError(t, err)
	theirs, err := New(context.Background(), Options{Service: "theirs", NoMetrics: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, ours.Shutdown(context.Background()))
		assert.NoError(t, theirs.Shutdown(context.Background()))
	})

	conn, ended := serveFake(t, func(s *grpc.Server) { ours.RegisterMethods(s) },
		append(ours.ServerOptions(), grpc.InTapHandle(ours.Tap(nil)))...)
	traffic(t, conn, ended)
	plugin := grpcotel.ServerOption(grpcotel.Options{MetricsOptions: grpcotel.MetricsOptions{
		MeterProvider: theirs.MeterProvider(),
		Metrics:       stats.NewMetricSet(grpcotel.ServerCallStartedMetricName, grpcotel.ServerCallDurationMetricName),
	}})
	conn, ended = serveFake(t, nil, append(theirs.ServerOptions(), plugin)...)
	traffic(t, conn, ended)

	got, want := grpcServerSeries(t, ours), grpcServerSeries(t, theirs)
	require.Len(t, want, 2, "the plugin's series: %v", want)
	assert.Equal(t, want, got)
	// And the counts are the traffic's, each status by its canonical name.
	d := got["grpc_server_call_duration_seconds"].counts
	assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=CANCELLED"])
	assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=RESOURCE_EXHAUSTED"])
	assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=CODE(17)"])
	assert.Equal(t, uint64(2), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=OK"])
	assert.Equal(t, uint64(3), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=NOT_FOUND"])
	assert.Equal(t, uint64(2), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=INVALID_ARGUMENT"])
	assert.Equal(t, uint64(3), d["grpc_method="+methodLabel(rpc.Cache_Store_FullMethodName)+",grpc_status=OK"])
	assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Dump_FullMethodName)+",grpc_status=OK"])
	assert.Equal(t, uint64(1), d["grpc_method=grpc.health.v1.Health/Check,grpc_status=OK"])
	assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=UNIMPLEMENTED"])
	assert.Equal(t, uint64(2), got["grpc_server_call_started_total"].counts["grpc_method=other"])
}

// Before RegisterMethods (or without it) every call is "other": a label
// value never comes from the client.
func TestUnregisteredMethodsAreOther(t *testing.T) {
	tel, err := New(context.Background(), Options{Service: "cache"})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, tel.Shutdown(context.Background())) })
	conn, ended := serveFake(t, nil, append(tel.ServerOptions(), grpc.InTapHandle(tel.Tap(nil)))...)
	traffic(t, conn, ended)
	d := grpcServerSeries(t, tel)["grpc_server_call_duration_seconds"].counts
	total := uint64(0)
	for labels, n := range d {
		assert.True(t, strings.HasPrefix(labels, "grpc_method=other,"), labels)
		total += n
	}
	assert.Equal(t, uint64(5+17+3+1+1), total)
}

// A call the server's tap refuses never reaches an interceptor (or a
// stats handler): it is counted as started and ended there, with its code,
// and as a rejection by its reason. Without a tap, the interceptors count
// calls alone.
func TestTapRefusalsAndCallsWithoutTapAreCounted(t *testing.T) {
	refuse := func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if info.FullMethodName == rpc.Cache_Store_FullMethodName {
			return nil, apiStatus(codes.ResourceExhausted, "RATE_LIMITED", "tenant gopher")
		}
		return ctx, nil
	}
	for _, withTap := range []bool{true, false} {
		tel, err := New(context.Background(), Options{Service: "cache"})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, tel.Shutdown(context.Background())) })
		opts := tel.ServerOptions()
		if withTap {
			opts = append(opts, grpc.InTapHandle(tel.Tap(refuse)))
		}
		conn, ended := serveFake(t, func(s *grpc.Server) { tel.RegisterMethods(s) }, opts...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := rpc.NewCacheClient(conn)
		_, err = c.Get(ctx, &rpc.GetReq{Key: "a"})
		require.NoError(t, err)
		<-ended
		_, err = c.Store(ctx, &rpc.StoreReq{Key: "a"})
		if !withTap {
			require.NoError(t, err)
			<-ended
		} else {
			require.Equal(t, codes.ResourceExhausted, status.Code(err))
		}
		got := grpcServerSeries(t, tel)
		d := got["grpc_server_call_duration_seconds"].counts
		assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Get_FullMethodName)+",grpc_status=OK"], "tap %v", withTap)
		assert.Equal(t, uint64(1), got["grpc_server_call_started_total"].counts["grpc_method="+methodLabel(rpc.Cache_Store_FullMethodName)], "tap %v", withTap)
		fams, err := tel.Registry().Gather()
		require.NoError(t, err)
		rejections := 0.0
		for _, f := range fams {
			if f.GetName() == "cache_rejections_total" {
				for _, m := range f.GetMetric() {
					rejections += m.GetCounter().GetValue()
				}
			}
		}
		if withTap {
			assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Store_FullMethodName)+",grpc_status=RESOURCE_EXHAUSTED"])
			assert.Equal(t, 1.0, rejections)
		} else {
			assert.Equal(t, uint64(1), d["grpc_method="+methodLabel(rpc.Cache_Store_FullMethodName)+",grpc_status=OK"])
			assert.Equal(t, 0.0, rejections)
		}
	}
}

// apiStatus is a status error with an ErrorInfo, as the service's errors
// carry.
func apiStatus(c codes.Code, reason, subject string) error {
	st, err := status.New(c, "refused").WithDetails(&errdetails.ErrorInfo{
		Reason: reason, Metadata: map[string]string{"subject": subject},
	})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// methodLabel is a method's grpc_method label: its full name without the
// leading slash (from the generated constant, so that it follows a rename).
func methodLabel(fullMethod string) string { return strings.TrimPrefix(fullMethod, "/") }
