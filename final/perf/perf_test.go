package perf_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/loadgen"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

const (
	token    = "bench"
	keySpace = 1000
	workers  = 32 // calls in flight: under the servers' 64 streams per connection
	rounds   = 10 // the two servers take turns, so drift on the machine hits both
)

// emptyCache answers at once: the floor that gRPC itself costs.
type emptyCache struct{ rpc.UnimplementedCacheServer }

func (emptyCache) Store(context.Context, *rpc.StoreReq) (*rpc.StoreResp, error) {
	return &rpc.StoreResp{}, nil
}
func (emptyCache) Get(context.Context, *rpc.GetReq) (*rpc.GetResp, error) { return &rpc.GetResp{}, nil }

// target is one server under measurement and a client for it.
type target struct {
	name  string
	cache rpc.CacheClient
}

// startFull runs the complete stack: Accounts and one cache replica with
// every interceptor, the tap, auth cache and quota. Logging stays on at Warn
// (a production setting: failures are logged, successes are not), and the
// rate limits are lifted so that they measure their cost, not their limit.
func startFull(b *testing.B, useTLS bool) (*devstack.Stack, credentials.TransportCredentials) {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := devstack.Start(devstack.Config{
		CertDir:      b.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0"},
		Logger:       quiet,
		// A quota no run reaches: new-key Stores measure a reservation each.
		Directory: accounts.Accounts(map[string]accounts.Account{token: {MaxCacheKeys: 1 << 40}}),
		TuneCache: func(_ int, c *server.CacheConfig) {
			c.Limits.Rate, c.Limits.TenantRate = rate.Inf, rate.Inf
			if !useTLS {
				c.TLS = nil
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Stop)
	creds := insecure.NewCredentials()
	if useTLS {
		cfg, err := tlsutil.ClientConfig(st.CA, "", "")
		if err != nil {
			b.Fatal(err)
		}
		creds = credentials.NewTLS(cfg)
	}
	return st, creds
}

// startEmpty serves emptyCache with the same certificate, or none.
func startEmpty(b *testing.B, st *devstack.Stack, useTLS bool) string {
	b.Helper()
	// The same transport settings as the stack (workers, keepalive, streams).
	opts := []grpc.ServerOption{grpc.NumStreamWorkers(64), grpc.MaxConcurrentStreams(64)}
	if useTLS {
		cfg, err := tlsutil.Dir(st.CA[:len(st.CA)-len(tlsutil.CAFile)]).Server(false)
		if err != nil {
			b.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	srv := grpc.NewServer(opts...)
	rpc.RegisterCacheServer(srv, emptyCache{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	b.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// dial makes the same client for both servers: a bearer token per call, no
// client interceptors, so the difference is the server's.
func dial(b *testing.B, addr string, creds credentials.TransportCredentials, useTLS bool) rpc.CacheClient {
	b.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(client.TokenCredentials{Token: token, AllowInsecure: !useTLS}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return rpc.NewCacheClient(conn)
}

var keys = func() []string {
	k := make([]string, keySpace)
	for i := range k {
		k[i] = "key-" + strconv.Itoa(i)
	}
	return k
}()

var value = make([]byte, 64)

var newKeys atomic.Int64

// newKey returns a 16-byte key that no call of this process used before.
func newKey() string {
	return fmt.Sprintf("new-%012d", newKeys.Add(1))
}

func call(ctx context.Context, c rpc.CacheClient, op string, i int64) error {
	// Like every real caller, each call has a deadline (well under the
	// server's cap, which then needs no timer of its own).
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := keys[i%keySpace]
	if op == "NewStore" {
		key = newKey()
	}
	if op == "Get" {
		_, err := c.Get(ctx, &rpc.GetReq{Key: key})
		return err
	}
	_, err := c.Store(ctx, &rpc.StoreReq{Key: key, Val: value})
	return err
}

// drive makes n calls with `workers` in flight and returns how long they took.
func drive(b *testing.B, c rpc.CacheClient, op string, n int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if err := call(ctx, c, op, i); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("%s: %v", op, *err)
	}
	return time.Since(start)
}

// BenchmarkStackVsEmptyHandler reports the complete server's throughput as
// a fraction of an empty handler's ("ratio"), for Get, Store (overwrites:
// the hot path) and NewStore (a key never stored before, which takes a quota
// slot from Accounts), with TLS off and on. Every key is stored first, so a
// Get finds it and an overwrite needs no new slot. NewStore also reports its
// throughput over overwrite Store's on the same stack in the same rounds
// ("ratio-overwrite").
func BenchmarkStackVsEmptyHandler(b *testing.B) {
	for _, op := range []string{"Get", "Store", "NewStore"} {
		for _, useTLS := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/tls=%v", op, useTLS), func(b *testing.B) {
				st, creds := startFull(b, useTLS)
				full := dial(b, st.CacheAddrs[0], creds, useTLS)
				empty := dial(b, startEmpty(b, st, useTLS), creds, useTLS)
				emptyOp := op
				if op == "NewStore" {
					emptyOp = "Store" // the empty handler stores nothing either way
				}
				type turn struct{ name, op string }
				turns := []turn{{"stack", op}, {"empty", emptyOp}}
				if op == "NewStore" {
					turns = append(turns, turn{"overwrite", "Store"})
				}
				client := map[string]rpc.CacheClient{"stack": full, "overwrite": full, "empty": empty}
				drive(b, full, "Store", keySpace) // prefill, and warm both up
				drive(b, empty, emptyOp, keySpace)

				b.ResetTimer()
				var took = map[string]time.Duration{}
				per := max(b.N/rounds, 1)
				for r := range rounds {
					for i := range turns {
						t := turns[(i+r)%len(turns)] // each takes its turn first
						took[t.name] += drive(b, client[t.name], t.op, per)
					}
				}
				b.StopTimer()
				calls := float64(per * rounds)
				rate := func(name string) float64 { return calls / took[name].Seconds() }
				b.ReportMetric(float64(took["stack"].Nanoseconds())/calls, "ns/op")
				b.ReportMetric(rate("stack"), "stack-calls/s")
				b.ReportMetric(rate("empty"), "empty-calls/s")
				b.ReportMetric(rate("stack")/rate("empty"), "ratio")
				if op == "NewStore" {
					b.ReportMetric(rate("overwrite"), "overwrite-calls/s")
					b.ReportMetric(rate("stack")/rate("overwrite"), "ratio-overwrite")
				}
			})
		}
	}
}

// BenchmarkLatencyAtHalfPeak reports p50 and p99 latency at a fixed offered
// load, the stack's and the empty handler's, for Get and NewStore over TLS.
// It first measures the stack's peak (b.N calls, closed loop, as cacheload
// does), then offers half of it to both servers in an open loop (b.N calls
// each, cacheload's -rate: latency counts from each call's scheduled start,
// so a server that falls behind pays for its backlog).
func BenchmarkLatencyAtHalfPeak(b *testing.B) {
	for _, op := range []string{"Get", "NewStore"} {
		b.Run(op, func(b *testing.B) {
			st, _ := startFull(b, true)
			tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
			if err != nil {
				b.Fatal(err)
			}
			base := loadgen.Config{Creds: credentials.NewTLS(tlsCfg), Token: token, Op: "get",
				Conns: 1, Concurrency: workers, Keys: keySpace, ValueSize: len(value), Prefill: true,
				CallTimeout: 5 * time.Second}
			if op == "NewStore" {
				base.Op, base.Keys = "store", 0
			}
			addrs := map[string][]string{"stack": st.CacheAddrs, "empty": {startEmpty(b, st, true)}}
			run := func(name string, rate float64, n int) *loadgen.OpResult {
				cfg := base
				cfg.Addrs, cfg.Rate, cfg.Count = addrs[name], rate, int64(max(n, 1))
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				res, err := loadgen.Run(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Total.Errors) > 0 {
					b.Fatalf("%s %s: errors %v", name, op, res.Total.Errors)
				}
				return &res.Total
			}
			run("stack", 0, keySpace) // warm up (and, for Get, prefill)
			run("empty", 0, keySpace)

			b.ResetTimer()
			peak := run("stack", 0, b.N).PerSecond
			offered := peak / 2
			stack := run("stack", offered, b.N)
			empty := run("empty", offered, b.N)
			b.StopTimer()
			us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
			b.ReportMetric(peak, "stack-peak-calls/s")
			b.ReportMetric(offered, "offered-calls/s")
			b.ReportMetric(us(stack.P50), "stack-p50-µs")
			b.ReportMetric(us(stack.P99), "stack-p99-µs")
			b.ReportMetric(us(empty.P50), "empty-p50-µs")
			b.ReportMetric(us(empty.P99), "empty-p99-µs")
		})
	}
}

// chain composes interceptors the way grpc.ChainUnaryInterceptor does.
func chain(ics []grpc.UnaryServerInterceptor, handler grpc.UnaryHandler, info *grpc.UnaryServerInfo) grpc.UnaryHandler {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], handler
		handler = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
	}
	return handler
}

// headerStream stands in for gRPC's server stream, which keeps the response
// header the same way.
type headerStream struct{ header metadata.MD }

func (*headerStream) Method() string { return rpc.Cache_Get_FullMethodName }
func (s *headerStream) SetHeader(md metadata.MD) error {
	s.header = metadata.Join(s.header, md)
	return nil
}
func (s *headerStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }
func (*headerStream) SetTrailer(metadata.MD) error      { return nil }

// BenchmarkInterceptorChain is what the cache server's interceptors cost per
// call (logging at Warn, recovery, replica header, deadline cap, dry run,
// cached authentication, per-tenant limit), around a handler that does
// nothing: for a caller whose deadline is within the server's cap, and for
// one with no deadline (or a later one), which the cap shortens.
func BenchmarkInterceptorChain(b *testing.B) {
	st, _ := startFull(b, false)
	info := &grpc.UnaryServerInfo{FullMethod: rpc.Cache_Get_FullMethodName}
	call := chain(st.Caches[0].UnaryInterceptors(), func(context.Context, any) (any, error) { return nil, nil }, info)
	incoming := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
	for _, bc := range []struct {
		name    string
		timeout time.Duration // 0: none
	}{{"deadline under the cap", 5 * time.Second}, {"no deadline", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			// Cancelable, as a gRPC server's stream context is.
			ctx, cancel := context.WithCancel(incoming)
			defer cancel()
			if bc.timeout > 0 {
				var cancelTimeout context.CancelFunc
				ctx, cancelTimeout = context.WithTimeout(ctx, bc.timeout)
				defer cancelTimeout()
			}
			if _, err := call(ctx, nil); err != nil { // the first call fills the auth cache
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// A new stream per call, as in a server.
				if _, err := call(grpc.NewContextWithServerTransportStream(ctx, &headerStream{}), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
