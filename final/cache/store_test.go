package cache

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/accounts"
)

// newBigCache is a cache whose tenant "t" has room for keys keys (and
// bytes bytes, 0: no byte cap), with the default limits.
func newBigCache(keys, bytes int64) *Cache {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: keys, MaxCacheBytes: bytes}}), time.Hour)
	return New(accounts.Local{Service: acc}, "r1", Limits{}, quiet)
}

// arenaCap is the memory the tenant's chunks take (their capacity), and
// how many blocks it has.
func arenaCap(td *tenantData) (n, blocks int) {
	td.mu.RLock()
	defer td.mu.RUnlock()
	for _, b := range td.blocks {
		for _, c := range b.data.chunks {
			n += cap(c)
		}
	}
	return n, len(td.blocks)
}

// withinBound checks the arena's promise: at most about three times what
// the tenant stores (live bytes, as much garbage, room left in each
// block's last chunk), plus the garbage a block may keep uncompacted.
func withinBound(t *testing.T, c *Cache, what string) int {
	t.Helper()
	td := c.Data().lookup("t")
	got, blocks := arenaCap(td)
	size := int(c.Data().Bytes("t"))
	require.LessOrEqual(t, got, 3*size+blocks*(garbageMin+firstChunk)+maxChunk, "%s: the chunks take %d bytes for %d stored", what, got, size)
	return got
}

// Overwrites leave their old bytes in the arena until a block's garbage
// outweighs what it stores; then the block is compacted. Every key keeps
// its latest value and revision through that, values read before a
// compaction stay as they were (the arena never writes over bytes it
// handed out), and the arena stays within its bound.
func TestOverwritesAreCompactedAndNoValueHandedOutChanges(t *testing.T) {
	c := newBigCache(5000, 0)
	ctx := ctxT(t)
	const keys = 2500 // three blocks
	val := func(k, round int) []byte { return bytes.Repeat([]byte{byte('a' + round%26)}, 100+k%200+round%7) }
	revs := map[string]int64{}
	store := func(round int) {
		for k := range keys {
			key := fmt.Sprintf("key-%04d", k)
			rev, err := c.StoreIf(ctx, "t", key, val(k, round), Cond{}, false)
			require.NoError(t, err)
			require.Greater(t, rev, revs[key])
			revs[key] = rev
		}
	}
	store(0)
	held, err := c.Get("t", "key-0007") // a value in flight, say
	require.NoError(t, err)
	heldCopy := bytes.Clone(held)

	td := c.Data().lookup("t")
	first := func() *byte {
		td.mu.RLock()
		defer td.mu.RUnlock()
		return &td.blocks[0].data.chunks[0][0]
	}
	compactions := 0
	for round := 1; round <= 10; round++ {
		before := first()
		store(round)
		if first() != before { // the first block was compacted into a new chunk
			compactions++
		}
		withinBound(t, c, fmt.Sprintf("round %d", round))
	}
	assert.Positive(t, compactions, "10 rounds of overwrites never compacted")
	assert.Equal(t, heldCopy, held, "a value handed out before a compaction changed")

	for k := range keys {
		key := fmt.Sprintf("key-%04d", k)
		got, rev, err := c.GetRevision("t", key)
		require.NoError(t, err)
		assert.Equal(t, val(k, 10), got, key)
		assert.Equal(t, revs[key], rev, key)
	}
	assert.Equal(t, keys, c.Data().Len("t"))
	var dumped []string
	require.NoError(t, c.Dump("t", func(key string, v []byte) error {
		dumped = append(dumped, key)
		return nil
	}))
	require.Len(t, dumped, keys)
	assert.Equal(t, "key-0000", dumped[0], "Dump keeps the order keys were first stored in")
	assert.Equal(t, "key-2499", dumped[keys-1])
}

// A value that fills a chunk, then a tiny one, then a large one again:
// each leaves the end of a chunk unused, which counts as garbage, so a
// tenant within a small byte quota cannot make its arena grow past the
// bound by alternating sizes.
func TestAlternatingValueSizesKeepTheArenaBounded(t *testing.T) {
	c := newBigCache(10, 200<<10)
	ctx := ctxT(t)
	peak := 0
	for i := range 200 {
		require.NoError(t, c.Store(ctx, "t", "b", bytes.Repeat([]byte{'x'}, maxChunk+1-i%2), false))
		peak = max(peak, withinBound(t, c, fmt.Sprintf("write %d of b", i)))
		require.NoError(t, c.Store(ctx, "t", "a", []byte{'y'}, false))
		peak = max(peak, withinBound(t, c, fmt.Sprintf("write %d of a", i)))
		require.NoError(t, c.Store(ctx, "t", "b", []byte{'z'}, false))
		peak = max(peak, withinBound(t, c, fmt.Sprintf("shrink %d of b", i)))
	}
	assert.Less(t, peak, 4*maxChunk)
}

// Trimming the newest keys leaves no chunk behind once a block is empty: a
// tenant trimmed to nothing holds no data.
func TestATenantTrimmedToNothingHoldsNoData(t *testing.T) {
	c := newBigCache(5000, 0)
	ctx := ctxT(t)
	for k := range 2000 {
		require.NoError(t, c.Store(ctx, "t", fmt.Sprintf("k%05d", k), bytes.Repeat([]byte{'v'}, 500), false))
	}
	td := c.Data().lookup("t")
	td.mu.Lock()
	for td.count() > 0 {
		td.removeNewest()
	}
	td.mu.Unlock()
	got, blocks := arenaCap(td)
	assert.Zero(t, got)
	assert.Zero(t, blocks)
	assert.Zero(t, c.Data().Bytes("t"))
	_, err := c.Get("t", "k00001")
	require.Error(t, err)
}

// A value from the store cannot be grown into its neighbour: its capacity
// ends where it does.
func TestAStoredValueEndsAtItsCapacity(t *testing.T) {
	c := newBigCache(10, 0)
	ctx := ctxT(t)
	require.NoError(t, c.Store(ctx, "t", "a", []byte("first"), false))
	require.NoError(t, c.Store(ctx, "t", "b", []byte("second"), false))
	a, err := c.Get("t", "a")
	require.NoError(t, err)
	assert.Equal(t, len(a), cap(a))
	_ = append(a, "XXXX"...) // copies: a's capacity is full
	b, err := c.Get("t", "b")
	require.NoError(t, err)
	assert.Equal(t, "second", string(b))
}

// Two keys whose hashes are equal (with 64 bits and a random seed, next to
// never; made here by hand) are both found, and either can go.
func TestKeysThatShareAHashAreBothKept(t *testing.T) {
	s := &Store{}
	td := s.tenant("t")
	td.mu.Lock()
	defer td.mu.Unlock()
	td.insert("a", []byte("va"))
	// Make "b"'s hash point at "a", as a collision would.
	td.index[maphash.String(td.seed, "b")] = 0
	td.insert("b", []byte("vb"))
	require.Len(t, td.clash, 1, "b went to the clash map")

	for _, k := range []string{"a", "b"} {
		i, ok := td.find(k)
		require.True(t, ok, k)
		assert.Equal(t, "v"+k, string(td.val(i)), k)
	}
	_, ok := td.find("c")
	assert.False(t, ok)

	td.removeNewest() // b
	_, ok = td.find("b")
	assert.False(t, ok)
	assert.Empty(t, td.clash)
	i, ok := td.find("a")
	require.True(t, ok)
	assert.Equal(t, "va", string(td.val(i)))
	td.removeNewest() // a
	_, ok = td.find("a")
	assert.False(t, ok)
	assert.Zero(t, td.count())
}

// The store's per-item records hold no pointers, so the collector never
// scans them: the index and the items' records are plain memory, and keys
// and values are bytes in a few large chunks per block of items.
func TestTheStoreGivesTheCollectorNothingToWalkPerItem(t *testing.T) {
	for f := range reflect.TypeFor[entry]().Fields() {
		assert.Contains(t, []reflect.Kind{reflect.Uint32, reflect.Int64}, f.Type.Kind(), "entry.%s", f.Name)
	}
	c := newBigCache(1<<20, 0)
	ctx := context.Background()
	for i := range 3000 {
		require.NoError(t, c.Store(ctx, "t", fmt.Sprintf("k%07d", i), []byte("value"), false))
	}
	td := c.Data().lookup("t")
	assert.Equal(t, reflect.TypeFor[map[uint64]int32](), reflect.TypeOf(td.index))
	assert.Len(t, td.blocks, 3, "3000 items in blocks of %d", orderBlock)
	chunks := 0
	for _, b := range td.blocks {
		chunks += len(b.data.chunks)
	}
	assert.Less(t, chunks, 30, "keys and values are in a few chunks per block, not one allocation each")
}

// An item larger than largeItem has a chunk of its own: no compaction
// copies it (so a compaction copies at most orderBlock × largeItem bytes,
// however large the values), and an overwrite lets its chunk go, whose
// slot the next large item takes.
func TestLargeItemsKeepTheirOwnChunk(t *testing.T) {
	c := newBigCache(5000, 0)
	ctx := ctxT(t)
	big := bytes.Repeat([]byte{'B'}, largeItem+1)
	require.NoError(t, c.Store(ctx, "t", "big", big, false))
	held, err := c.Get("t", "big")
	require.NoError(t, err)
	// Enough small overwrites in the same block to compact it a few times.
	for round := range 40 {
		for k := range 20 {
			require.NoError(t, c.Store(ctx, "t", fmt.Sprintf("s%02d", k), bytes.Repeat([]byte{byte('a' + round%26)}, 200), false))
		}
	}
	again, err := c.Get("t", "big")
	require.NoError(t, err)
	assert.Same(t, &held[0], &again[0], "a compaction copied the large item")

	td := c.Data().lookup("t")
	slots := func() (used, all int) {
		td.mu.RLock()
		defer td.mu.RUnlock()
		for _, ch := range td.blocks[0].data.chunks {
			if ch != nil {
				used++
			}
		}
		return used, len(td.blocks[0].data.chunks)
	}
	_, before := slots()
	for i := range 50 {
		big[0] = byte('0' + i%10)
		require.NoError(t, c.Store(ctx, "t", "big", big, false))
	}
	used, after := slots()
	assert.LessOrEqual(t, after, before+1, "each overwrite of the large item took a new slot")
	assert.LessOrEqual(t, used, 3, "the large item's old chunks are let go")
	got, err := c.Get("t", "big")
	require.NoError(t, err)
	assert.Equal(t, big, got)
	assert.Equal(t, byte('B'), held[0], "a value handed out before its overwrites changed")
	withinBound(t, c, "after the large overwrites")
}

// A trim that leaves the last block with few of its items compacts it, so
// the bytes of the dropped ones are not kept for as long as no write comes.
func TestATrimmedBlockIsCompacted(t *testing.T) {
	c := newBigCache(5000, 0)
	ctx := ctxT(t)
	for k := range orderBlock {
		require.NoError(t, c.Store(ctx, "t", fmt.Sprintf("k%05d", k), bytes.Repeat([]byte{'v'}, 1000), false))
	}
	s := c.Data()
	n := int64(s.Len("t"))
	s.trim(map[string]int64{"t": n + s.Spare("t")}, map[string]int64{"t": 1})
	require.Equal(t, 1, s.Len("t"))
	withinBound(t, c, "after the trim")
	got, err := c.Get("t", "k00000")
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte{'v'}, 1000), got)
}
