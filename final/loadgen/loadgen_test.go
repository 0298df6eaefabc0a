package loadgen

import (
	"context"
	"grpcworkshop.example/final/rpc"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"grpcworkshop.example/final/tlsutil"
)

// bytesCodec hands the fake server each message's raw bytes.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }
func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// fields decodes the length-delimited fields of a message.
func fields(t *testing.T, b []byte) map[protowire.Number][]byte {
	out := map[protowire.Number][]byte{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		require.Positive(t, n)
		require.Equal(t, protowire.BytesType, typ)
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		require.GreaterOrEqual(t, n, 0)
		out[num] = v
		b = b[n:]
	}
	return out
}

// fakeCache checks what the load generator sends, speaking raw protobuf.
type fakeCache struct {
	t        *testing.T
	mu       sync.Mutex
	store    map[string][]byte
	badToken int
}

func (f *fakeCache) checkToken(ctx context.Context, field []byte) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if string(field) != "tok" || len(md["authorization"]) != 1 || md["authorization"][0] != "Bearer tok" {
		f.badToken++
	}
}

func (f *fakeCache) unary(method string) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: method, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		var req []byte
		if err := dec(&req); err != nil {
			return nil, err
		}
		if ic != nil {
			return ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/" + rpc.Cache_ServiceDesc.ServiceName + "/" + method}, func(ctx context.Context, _ any) (any, error) {
				return f.handle(ctx, method, req)
			})
		}
		return f.handle(ctx, method, req)
	}}
}

func (f *fakeCache) handle(ctx context.Context, method string, req []byte) (any, error) {
	fs := fields(f.t, req)
	key := string(fs[1])
	resp := []byte{}
	switch method {
	case "Store":
		f.checkToken(ctx, fs[storeTokenField])
		f.mu.Lock()
		f.store[key] = fs[2]
		f.mu.Unlock()
	case "Get":
		f.checkToken(ctx, fs[getTokenField])
		f.mu.Lock()
		val, ok := f.store[key]
		f.mu.Unlock()
		if !ok {
			return nil, status.Error(codes.NotFound, "no such key")
		}
		resp = appendBytes(nil, 1, val)
	}
	return &resp, nil
}

func startFake(t *testing.T, opts ...grpc.ServerOption) (*fakeCache, string) {
	f := &fakeCache{t: t, store: map[string][]byte{}}
	desc := &grpc.ServiceDesc{
		ServiceName: rpc.Cache_ServiceDesc.ServiceName,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{f.unary("Store"), f.unary("Get")},
		Streams: []grpc.StreamDesc{{StreamName: "Dump", ServerStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
			var req []byte
			if err := stream.RecvMsg(&req); err != nil {
				return err
			}
			f.checkToken(stream.Context(), fields(t, req)[dumpTokenField])
			f.mu.Lock()
			items := make([][]byte, 0, len(f.store))
			for k, v := range f.store {
				items = append(items, appendBytes(appendString(nil, 1, k), 2, v))
			}
			f.mu.Unlock()
			for _, it := range items {
				if err := stream.SendMsg(&it); err != nil {
					return err
				}
			}
			return nil
		}}},
	}
	srv := grpc.NewServer(append(opts, grpc.ForceServerCodecV2(bytesCodec{}))...)
	srv.RegisterService(desc, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String()
}

func testConfig(addr, op string) Config {
	return Config{Addrs: []string{addr}, Token: "tok", Op: op, GetRatio: 0.5, Conns: 2, Concurrency: 4,
		Count: 200, Keys: 10, ValueSize: 16, Prefill: true, CallTimeout: 5 * time.Second}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMixRunsExactlyCountCallsAndSendsTheTokenBothWays(t *testing.T) {
	f, addr := startFake(t)
	res, err := Run(testContext(t), testConfig(addr, "mix"))
	require.NoError(t, err)

	assert.EqualValues(t, 200, res.Total.Calls)
	assert.Empty(t, res.Total.Errors)
	require.Contains(t, res.PerOp, "get")
	require.Contains(t, res.PerOp, "store")
	assert.Equal(t, res.Total.Calls, res.PerOp["get"].Calls+res.PerOp["store"].Calls)
	assert.Positive(t, res.Total.PerSecond)
	assert.LessOrEqual(t, res.Total.P50, res.Total.P99)
	assert.LessOrEqual(t, res.Total.P99, res.Total.Max)
	assert.Zero(t, f.badToken, "every call carries the token as a field and as bearer metadata")
	assert.Len(t, f.store, 10, "prefill stored the whole key space")
}

func TestFailedCallsAreCountedByCode(t *testing.T) {
	_, addr := startFake(t)
	cfg := testConfig(addr, "get")
	cfg.Prefill = false // every Get misses
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)

	assert.EqualValues(t, 200, res.Total.Calls)
	assert.Equal(t, map[string]int64{"NotFound": 200}, res.PerOp["get"].Errors)
}

func TestDumpCountsItemsAndBytes(t *testing.T) {
	_, addr := startFake(t)
	cfg := testConfig(addr, "dump")
	cfg.Count = 5
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)

	d := res.PerOp["dump"]
	require.NotNil(t, d)
	assert.EqualValues(t, 5, d.Calls)
	assert.EqualValues(t, 5*10, d.Items, "each dump returns the 10 prefilled keys")
	assert.Positive(t, d.ItemBytes)
}

func TestDurationBoundsARun(t *testing.T) {
	_, addr := startFake(t)
	cfg := testConfig(addr, "store")
	cfg.Count = 0
	cfg.Duration = 200 * time.Millisecond
	var progress int
	cfg.Progress = func(Progress) { progress++ }
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.Positive(t, res.Total.Calls)
	assert.Empty(t, res.Total.Errors, "calls cut off by the end of the run are not errors")
}

func TestBadConfigIsRefused(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no address": func(c *Config) { c.Addrs = nil },
		"bad op":     func(c *Config) { c.Op = "delete" },
		"no bound":   func(c *Config) { c.Count, c.Duration = 0, 0 },
		"no keys":    func(c *Config) { c.Keys = 0 },
		"bad ratio":  func(c *Config) { c.GetRatio = 2 },
	} {
		cfg := testConfig("127.0.0.1:1", "get")
		mutate(&cfg)
		_, err := Run(testContext(t), cfg)
		assert.Error(t, err, name)
	}
}

func TestHistogramQuantilesAreWithinBucketPrecision(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := time.Duration(q*10000) * time.Microsecond
		got := h.quantile(q)
		assert.InEpsilon(t, float64(want), float64(got), 0.02, "q=%v", q)
	}
	assert.Equal(t, 10000*time.Microsecond, h.max)
	assert.Equal(t, 10000*time.Microsecond, h.quantile(1))
}

func TestRingHashOverTLSKeepsEachKeyOnOneReplicaAndUsesThemAll(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, tlsutil.WriteDevCerts(dir, []string{"localhost", "127.0.0.1"}))
	srvTLS, err := tlsutil.Dir(dir).Server(false)
	require.NoError(t, err)
	cliTLS, err := tlsutil.ClientConfig(tlsutil.Dir(dir).CA(), "", "")
	require.NoError(t, err)

	var fakes []*fakeCache
	cfg := testConfig("", "mix")
	cfg.Addrs = nil
	for range 3 {
		f, addr := startFake(t, grpc.Creds(credentials.NewTLS(srvTLS)))
		fakes = append(fakes, f)
		cfg.Addrs = append(cfg.Addrs, addr)
	}
	cfg.Creds = credentials.NewTLS(cliTLS)
	cfg.Keys = 30
	cfg.HashHeader = "x-cache-key"
	cfg.ServiceConfig = `{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": "x-cache-key"}}]}`

	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.Empty(t, res.Total.Errors, "every Get finds its key on the replica that stored it")
	total := 0
	for i, f := range fakes {
		assert.NotEmpty(t, f.store, "replica %d holds keys", i)
		total += len(f.store)
	}
	assert.Equal(t, 30, total, "each key is stored on exactly one replica")
}

func TestNewKeyModeStoresADistinct16ByteKeyPerCall(t *testing.T) {
	f, addr := startFake(t)
	cfg := testConfig(addr, "store")
	cfg.Keys = 0
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.True(t, res.NewKeys)
	assert.Empty(t, res.Total.Errors)
	require.Len(t, f.store, 200, "200 Stores, 200 keys")
	for k := range f.store {
		assert.Len(t, k, 16)
	}

	// A second run draws other keys: nothing it stores is an overwrite.
	_, err = Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.Len(t, f.store, 400)
}

func TestNewKeyModeRefusesGets(t *testing.T) {
	cfg := testConfig("127.0.0.1:1", "get")
	cfg.Keys = 0
	_, err := Run(testContext(t), cfg)
	assert.ErrorContains(t, err, "-op store")
}

// slowStores makes every Store take at least d, as an overloaded server would.
func slowStores(d time.Duration) grpc.ServerOption {
	return grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		time.Sleep(d)
		return h(ctx, req)
	})
}

func TestOpenLoopCountsTheBacklogInLatency(t *testing.T) {
	// One worker, a server that takes 20ms a call, and 1,000 calls/s offered:
	// the ten calls are due within 10ms, so the last one waits for the nine
	// before it. Its latency, from its scheduled start, is at least 9 x 20ms;
	// a closed loop would report about 20ms for every call.
	_, addr := startFake(t, slowStores(20*time.Millisecond))
	cfg := testConfig(addr, "store")
	cfg.Concurrency, cfg.Conns, cfg.Count, cfg.Rate = 1, 1, 10, 1000
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.EqualValues(t, 10, res.Total.Calls)
	assert.GreaterOrEqual(t, res.Total.Max, 9*20*time.Millisecond)

	var out strings.Builder
	res.WriteText(&out)
	assert.Contains(t, out.String(), "1000 calls/s offered")
	assert.Contains(t, out.String(), "fell behind")
}

func TestOpenLoopKeepsToTheOfferedRate(t *testing.T) {
	// 40 calls at 400/s are scheduled over 97.5ms: the run cannot end sooner,
	// whatever the server's speed.
	_, addr := startFake(t)
	cfg := testConfig(addr, "store")
	cfg.Count, cfg.Rate = 40, 400
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.EqualValues(t, 40, res.Total.Calls)
	assert.GreaterOrEqual(t, res.Elapsed, 39*time.Second/400)
}
