package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/rpc"
)

// serveDump serves c's Dump over loopback with the caller's account set
// as the auth interceptor would, and returns a client for it.
func serveDump(b *testing.B, c *cache.Cache, tenant string) rpc.CacheClient {
	b.Helper()
	acct := &accounts.Account{Tenant: tenant}
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, &auth.ContextStream{ServerStream: ss, Ctx: auth.WithAccount(ss.Context(), acct)})
		}))
	rpc.RegisterCacheServer(srv, &cacheService{cache: c})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return rpc.NewCacheClient(conn)
}

// fill gives tenant n small items, reserved from Accounts in process.
func fill(b *testing.B, c *cache.Cache, tenant string, n int) {
	val := []byte("sixteen byte val")
	ctx := context.Background()
	for i := range n {
		if err := c.Store(ctx, tenant, "key-"+strconv.Itoa(i), val, false); err != nil {
			b.Fatal(err)
		}
	}
}

// liveHeap is the heap that survives a collection: what is really held.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// dump streams the tenant's items and returns how many arrived; every
// `every` items it calls sample (0: never).
func dump(ctx context.Context, b *testing.B, cache rpc.CacheClient, every int, sample func()) int {
	stream, err := cache.Dump(ctx, &rpc.DumpReq{})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			return got
		}
		if err != nil {
			b.Fatal(err)
		}
		got++
		if every > 0 && got%every == 0 {
			sample()
		}
	}
}

// BenchmarkDump streams whole tenants of 10 thousand and 1 million small
// items. It reports items per second, bytes allocated per item (server and
// client together: they share the process), and, from one more dump after
// the timed ones, the most live heap the dump held beyond the store itself,
// sampled after a collection twenty times per dump. That last figure stays
// flat as the store grows: the server copies out a batch at a time.
func BenchmarkDump(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run("items="+strconv.Itoa(n), func(b *testing.B) {
			acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: int64(n)}}), time.Hour)
			c := cache.New(accounts.Local{Service: acc}, "bench", cache.Limits{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			fill(b, c, "t", n)
			cache := serveDump(b, c, "t")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()

			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			allocBefore := m.TotalAlloc
			b.ResetTimer()
			for range b.N {
				if got := dump(ctx, b, cache, 0, nil); got != n {
					b.Fatalf("dumped %d items, want %d", got, n)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&m)
			items := float64(n) * float64(b.N)
			b.ReportMetric(items/b.Elapsed().Seconds(), "items/s")
			b.ReportMetric(float64(m.TotalAlloc-allocBefore)/items, "B/item")

			base := liveHeap()
			var held uint64
			dump(ctx, b, cache, max(n/20, 1), func() {
				if h := liveHeap(); h > base {
					held = max(held, h-base)
				}
			})
			b.ReportMetric(float64(held)/(1<<20), "held-MiB")
		})
	}
}
