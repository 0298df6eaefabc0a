package cache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"grpcworkshop.example/final/accounts"
)

// liveHeap is the heap that survives a collection: what is really held.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rss is the process's resident set in bytes, from /proc (0 elsewhere).
func rss() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kib uint64
	for line := range bytes.Lines(data) {
		if n, _ := fmt.Sscanf(string(line), "VmRSS: %d kB", &kib); n == 1 {
			return kib << 10
		}
	}
	return 0
}

// gcTime is how long a full collection takes, the least of three: with a
// full store, the collector's work is marking what the store holds, which
// a replica under its memory limit does every cycle.
func gcTime() time.Duration {
	best := time.Duration(1 << 62)
	for range 3 {
		start := time.Now()
		runtime.GC()
		best = min(best, time.Since(start))
	}
	return best
}

// BenchmarkMemoryPerKey stores b.N new keys (16 bytes, values of 64 bytes)
// for one tenant through Cache.Store, each reserved from Accounts in
// process, and reports what the replica holds per key: the live heap after
// a collection (comparable with Redis's used_memory, which counts what its
// allocator hands out) and the growth of the process's resident set (which
// also counts memory the collector has freed but not yet returned), and the
// time of a full collection per key held (gc-ns/key). Run it with
// -benchtime 1000000x.
func BenchmarkMemoryPerKey(b *testing.B) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 1 << 40}}), time.Hour)
	c := New(accounts.Local{Service: acc}, "r1", Limits{}, quiet)
	ctx := context.Background()
	val := bytes.Repeat([]byte("v"), 64)
	heap0, rss0 := liveHeap(), rss()
	b.ResetTimer()
	for i := range b.N {
		// A new string per key, as the request decoder makes one.
		if err := c.Store(ctx, "t", fmt.Sprintf("k%015d", i), val, false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	heap1, rss1 := liveHeap(), rss()
	if got := c.Data().Len("t"); got != b.N {
		b.Fatalf("stored %d keys, want %d", got, b.N)
	}
	b.ReportMetric(float64(heap1-heap0)/float64(b.N), "heap-B/key")
	b.ReportMetric(float64(gcTime())/float64(b.N), "gc-ns/key")
	if rss0 > 0 {
		b.ReportMetric(float64(int64(rss1)-int64(rss0))/float64(b.N), "rss-B/key")
	}
	runtime.KeepAlive(c)
}
