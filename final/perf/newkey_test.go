package perf_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials/insecure"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/devstack"
	"grpcworkshop/final/rpc"
	"grpcworkshop/final/server"
)

// newKeys numbers the keys BenchmarkNewKeyVsOverwriteStore creates, so
// every new-key Store in the process is a key never stored before.
var newKeys atomic.Int64

// driveStores makes n Stores with `workers` in flight, of new keys or of
// overwrites of keySpace existing ones, and returns how long they took.
func driveStores(b *testing.B, c rpc.CacheClient, fresh bool, n int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				key := keys[i%keySpace]
				if fresh {
					key = "new-" + strconv.FormatInt(newKeys.Add(1), 10)
				}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.Store(cctx, &rpc.StoreReq{Key: key, Val: value})
				ccancel()
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("store: %v", *err)
	}
	return time.Since(start)
}

// BenchmarkNewKeyVsOverwriteStore is a Store of a key never seen before
// (it needs a quota slot from Accounts) as a fraction of an overwrite
// (which needs none), on the same replica, in turns over ten rounds, TLS
// off. The replica takes slots in blocks sized to demand, so most new keys
// need no round trip to Accounts; the target is a ratio of 0.7 or more.
func BenchmarkNewKeyVsOverwriteStore(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := devstack.Start(devstack.Config{
		CertDir:      b.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0"},
		Logger:       quiet,
		Directory:    accounts.Accounts(map[string]accounts.Account{token: {MaxCacheKeys: 1 << 40}}),
		TuneCache: func(_ int, c *server.CacheConfig) {
			c.Rate, c.TenantRate = rate.Inf, rate.Inf
			c.TLS = nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Stop)
	c := dial(b, st.CacheAddrs[0], insecure.NewCredentials(), false)
	driveStores(b, c, false, keySpace) // prefill, and warm up
	driveStores(b, c, true, keySpace)

	b.ResetTimer()
	took := map[bool]time.Duration{}
	per := max(b.N/rounds, 1)
	for r := range rounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, fresh := range order {
			took[fresh] += driveStores(b, c, fresh, per)
		}
	}
	b.StopTimer()
	calls := float64(per * rounds)
	newRate, overRate := calls/took[true].Seconds(), calls/took[false].Seconds()
	b.ReportMetric(float64(took[true].Nanoseconds())/calls, "ns/op")
	b.ReportMetric(newRate, "new-calls/s")
	b.ReportMetric(overRate, "overwrite-calls/s")
	b.ReportMetric(newRate/overRate, "ratio")
}
