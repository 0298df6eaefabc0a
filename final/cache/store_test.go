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

// newBigCache is a cache whose tenant "t" has room for keys keys, with the
// default limits.
func newBigCache(keys int64) *Cache {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: keys}}), time.Hour)
	return New(accounts.Local{Service: acc}, "r1", Limits{}, quiet)
}

// dataBytes is what the tenant's arena holds (garbage included).
func dataBytes(td *tenantData) int {
	n := 0
	for _, c := range td.data.chunks {
		n += len(c)
	}
	return n
}

// Overwrites leave their old bytes in the arena until the garbage
// outweighs what is stored; then the tenant is compacted. Every key keeps
// its latest value and revision through that, values read before a
// compaction stay as they were (the arena never writes over bytes it
// handed out), and the arena stays within about twice what is stored.
func TestOverwritesAreCompactedAndNoValueHandedOutChanges(t *testing.T) {
	c := newBigCache(1000)
	ctx := ctxT(t)
	const keys = 100
	val := func(k, round int) []byte { return bytes.Repeat([]byte{byte('a' + round%26)}, 900+k) }
	revs := map[string]int64{}
	store := func(round int) {
		for k := range keys {
			key := fmt.Sprintf("key-%03d", k)
			rev, err := c.StoreIf(ctx, "t", key, val(k, round), Cond{}, false)
			require.NoError(t, err)
			require.Greater(t, rev, revs[key])
			revs[key] = rev
		}
	}
	store(0)
	held, err := c.Get("t", "key-007") // a value in flight, say
	require.NoError(t, err)
	heldCopy := bytes.Clone(held)

	td := c.Data().lookup("t")
	compactions, peak := 0, 0
	for round := 1; round <= 40; round++ {
		td.mu.RLock()
		first := &td.data.chunks[0][0]
		td.mu.RUnlock()
		store(round)
		td.mu.RLock()
		if &td.data.chunks[0][0] != first { // a compaction made new chunks
			compactions++
		}
		peak = max(peak, dataBytes(td))
		size := td.size
		td.mu.RUnlock()
		require.LessOrEqual(t, dataBytes(td), int(2*size)+compactMin+maxChunk,
			"round %d: the arena holds far more than the tenant stores", round)
	}
	assert.Positive(t, compactions, "40 rounds of overwrites never compacted")
	assert.Equal(t, heldCopy, held, "a value handed out before a compaction changed")

	for k := range keys {
		key := fmt.Sprintf("key-%03d", k)
		got, rev, err := c.GetRevision("t", key)
		require.NoError(t, err)
		assert.Equal(t, val(k, 40), got, key)
		assert.Equal(t, revs[key], rev, key)
	}
	assert.Equal(t, keys, c.Data().Len("t"))
	var dumped []string
	require.NoError(t, c.Dump("t", func(key string, v []byte) error {
		dumped = append(dumped, key)
		return nil
	}))
	require.Len(t, dumped, keys)
	assert.Equal(t, "key-000", dumped[0], "Dump keeps the order keys were first stored in")
	assert.Equal(t, "key-099", dumped[keys-1])
}

// A value from the store cannot be grown into its neighbour: its capacity
// ends where it does.
func TestAStoredValueEndsAtItsCapacity(t *testing.T) {
	c := newBigCache(10)
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
		assert.Equal(t, "v"+k, string(td.val(td.at(i))), k)
	}
	_, ok := td.find("c")
	assert.False(t, ok)

	td.removeNewest() // b
	_, ok = td.find("b")
	assert.False(t, ok)
	assert.Empty(t, td.clash)
	i, ok := td.find("a")
	require.True(t, ok)
	assert.Equal(t, "va", string(td.val(td.at(i))))
	td.removeNewest() // a
	_, ok = td.find("a")
	assert.False(t, ok)
	assert.Zero(t, td.count())
}

// The store's records hold no pointers, so the collector never scans
// them: a block of items and the index are allocated as plain memory, and
// keys and values are bytes in a few large chunks.
func TestTheStoreGivesTheCollectorNothingToWalkPerItem(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[entry](), reflect.TypeFor[map[uint64]int32]().Key(), reflect.TypeFor[map[uint64]int32]().Elem()} {
		if typ.Kind() != reflect.Struct {
			assert.Contains(t, []reflect.Kind{reflect.Uint64, reflect.Int32}, typ.Kind())
			continue
		}
		for f := range typ.Fields() {
			assert.Contains(t, []reflect.Kind{reflect.Uint32, reflect.Int64}, f.Type.Kind(), "entry.%s", f.Name)
		}
	}
	assert.Equal(t, reflect.TypeFor[map[uint64]int32](), reflect.TypeOf(newBigCache(1).Data().tenant("x").index))
	c := newBigCache(1 << 20)
	ctx := context.Background()
	for i := range 3000 {
		require.NoError(t, c.Store(ctx, "t", fmt.Sprintf("k%07d", i), []byte("value"), false))
	}
	td := c.Data().lookup("t")
	assert.Len(t, td.items, 3, "3000 items in blocks of %d", orderBlock)
	assert.Greater(t, len(td.data.chunks), 1)
	assert.Less(t, len(td.data.chunks), 20, "keys and values are in a few large chunks, not one allocation each")
}
