package cache

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"grpcworkshop.example/final/accounts"
)

// BenchmarkBatch is the store's own cost per key of a batch of 64 against
// the same 64 keys one call at a time (overwrites of 1,000 keys and reads
// of them: no Accounts on the way), in one run, so the ratio of the
// ns/key figures is what batching saves inside the replica.
func BenchmarkBatch(b *testing.B) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 1 << 40}}), time.Hour)
	c := New(accounts.Local{Service: acc}, "r1", Limits{}, quiet)
	ctx := context.Background()
	val := bytes.Repeat([]byte("v"), 64)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%015d", i)
		if err := c.Store(ctx, "t", keys[i], val, false); err != nil {
			b.Fatal(err)
		}
	}
	const n = 64
	batch := func(i int) []string {
		from := (i * n) % (len(keys) - n)
		return keys[from : from+n]
	}
	check := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	perKey := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	}
	b.Run("StoreMany", func(b *testing.B) {
		items := make([]Item, n)
		for i := range b.N {
			for j, k := range batch(i) {
				items[j] = Item{Key: k, Val: val}
			}
			check(c.StoreMany(ctx, "t", items, false, func(_ int, err error) { check(err) }))
		}
		perKey(b)
	})
	b.Run("Store", func(b *testing.B) {
		for i := range b.N {
			for _, k := range batch(i) {
				check(c.Store(ctx, "t", k, val, false))
			}
		}
		perKey(b)
	})
	b.Run("GetMany", func(b *testing.B) {
		for i := range b.N {
			check(c.GetMany("t", batch(i), func(_ int, _ []byte, err error) { check(err) }))
		}
		perKey(b)
	})
	b.Run("Get", func(b *testing.B) {
		for i := range b.N {
			for _, k := range batch(i) {
				_, err := c.Get("t", k)
				check(err)
			}
		}
		perKey(b)
	})
}
