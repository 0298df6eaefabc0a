package cache

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/fault"
)

func storeMany(t *testing.T, c *Cache, items []Item, dryRun bool) []error {
	t.Helper()
	errs := make([]error, len(items))
	require.NoError(t, c.StoreMany(ctxT(t), "t", items, dryRun, func(i int, err error) { errs[i] = err }))
	return errs
}

func TestStoreManyOverQuotaStoresWhatFitsAndNamesTheRest(t *testing.T) {
	c, acc := newCache(t, 3)
	require.NoError(t, c.Store(ctxT(t), "t", "old", []byte("1"), false))
	errs := storeMany(t, c, []Item{{"a", nil}, {"b", nil}, {"c", nil}, {"old", []byte("2")}, {"", nil}}, false)
	assert.NoError(t, errs[0])
	assert.NoError(t, errs[1])
	assert.ErrorIs(t, errs[2], fault.ErrQuotaExceeded, "the third new key is over the quota of 3")
	assert.NoError(t, errs[3], "an overwrite needs no slot, after a refused item too")
	assert.ErrorIs(t, errs[4], fault.ErrInvalidArgument)
	assert.EqualValues(t, 3, acc.Ledger().Held("t"))
	got, err := c.Get("t", "old")
	require.NoError(t, err)
	assert.Equal(t, "2", string(got))
	_, err = c.Get("t", "c")
	assert.ErrorIs(t, err, fault.ErrKeyNotFound)
}

func TestGetManyAnswersEachKey(t *testing.T) {
	c, _ := newCache(t, 3)
	require.NoError(t, c.Store(ctxT(t), "t", "a", []byte("A"), false))
	var vals []string
	var errs []error
	require.NoError(t, c.GetMany("t", []string{"a", "nope", "", "a"}, func(i int, val []byte, err error) {
		vals, errs = append(vals, string(val)), append(errs, err)
	}))
	assert.Equal(t, []string{"A", "", "", "A"}, vals)
	assert.NoError(t, errs[0])
	assert.ErrorIs(t, errs[1], fault.ErrKeyNotFound)
	assert.ErrorIs(t, errs[2], fault.ErrInvalidArgument)
	assert.NoError(t, errs[3])
}

func TestDryRunStoreManyChangesNothingAndAsksTheQuota(t *testing.T) {
	c, acc := newCache(t, 1)
	require.NoError(t, c.Store(ctxT(t), "t", "a", nil, false))
	errs := storeMany(t, c, []Item{{"a", []byte("2")}, {"b", nil}, {"toolongkey", nil}}, true)
	assert.NoError(t, errs[0], "an overwrite would be stored")
	assert.ErrorIs(t, errs[1], fault.ErrQuotaExceeded, "a new key would not fit")
	assert.ErrorIs(t, errs[2], fault.ErrInvalidArgument)
	got, err := c.Get("t", "a")
	require.NoError(t, err)
	assert.Empty(t, got, "the dry run changed nothing")
	assert.Equal(t, 1, c.Data().Len("t"))
	assert.EqualValues(t, 1, acc.Ledger().Held("t"))
}

func TestBatchLimits(t *testing.T) {
	c := New(nil, "r1", Limits{MaxBatchKeys: 2, MaxBatchBytes: 10}, quiet)
	var fe *fault.Error
	err := c.StoreMany(ctxT(t), "t", []Item{{"a", nil}, {"b", nil}, {"c", nil}}, false, func(int, error) { t.Fatal("no item is stored") })
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, fault.InvalidArgument, fe.Reason)
	assert.Equal(t, "items", fe.Field)
	assert.Contains(t, fe.Msg, "3 keys")
	err = c.StoreMany(ctxT(t), "t", []Item{{"a", []byte(strings.Repeat("v", 10))}}, false, func(int, error) { t.Fatal("no item is stored") })
	require.ErrorAs(t, err, &fe)
	assert.Contains(t, fe.Msg, "11 bytes")
	err = c.GetMany("t", []string{"a", "b", "c"}, func(int, []byte, error) { t.Fatal("no key is read") })
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "keys", fe.Field)
}

// The items of a batch take effect in their order, also around an item
// that waits for a reservation from Accounts: a faster StoreMany (items
// applied under one hold of the lock, say) must keep that.
func TestStoreManyAppliesItemsInTheirOrder(t *testing.T) {
	c, _ := newCache(t, 1000)
	check := func(items []Item) {
		t.Helper()
		for i, err := range storeMany(t, c, items, false) {
			require.NoError(t, err, "item %d", i)
		}
		last := map[string]int{} // key -> its last item
		for i, it := range items {
			last[it.Key] = i
		}
		var revs []int64 // the revisions of the keys, in the order of their last items
		for i, it := range items {
			if last[it.Key] != i {
				continue
			}
			val, rev, err := c.GetRevision("t", it.Key)
			require.NoError(t, err)
			assert.Equal(t, string(it.Val), string(val), "%s holds the value of its last item", it.Key)
			revs = append(revs, rev)
		}
		assert.True(t, slices.IsSorted(revs), "keys were written in the order of their last items: %v", revs)
	}
	for i := range 10 {
		require.NoError(t, c.Store(ctxT(t), "t", fmt.Sprintf("k%d", i), nil, false))
	}
	// Overwrites only, many to each key.
	var items []Item
	for i := range 200 {
		items = append(items, Item{fmt.Sprintf("k%d", (i*7)%10), []byte(strconv.Itoa(i))})
	}
	check(items)
	// New keys between the overwrites, each of them a new slot: some
	// wait for a reservation.
	items = items[:0]
	for i := range 120 {
		key := fmt.Sprintf("k%d", i%10)
		if i%3 == 0 {
			key = fmt.Sprintf("n%d", i/6) // each new key twice
		}
		items = append(items, Item{key, []byte(strconv.Itoa(i))})
	}
	check(items)
}
