package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/fault"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newCache(t *testing.T, max int64) (*Cache, *accounts.Service) {
	t.Helper()
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: max}}), time.Hour)
	return New(accounts.Local{Service: acc}, "r1", Limits{MaxKeyBytes: 8, MaxValueBytes: 4}, quiet), acc
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStoreAndGetKeepTenantsApart(t *testing.T) {
	c, _ := newCache(t, 10)
	val := []byte("v")
	require.NoError(t, c.Store(ctxT(t), "t", "k", val, false))
	val[0] = 'X'
	got, err := c.Get("t", "k")
	require.NoError(t, err)
	assert.Equal(t, "v", string(got), "the caller's buffer was copied")
	_, err = c.Get("other", "k")
	assert.ErrorIs(t, err, fault.ErrKeyNotFound)
}

func TestBadInputIsInvalidArgumentWithTheField(t *testing.T) {
	c, _ := newCache(t, 10)
	for name, tc := range map[string]struct {
		err   error
		field string
	}{
		"empty key":   {c.Store(ctxT(t), "t", "", nil, false), "key"},
		"long key":    {c.Store(ctxT(t), "t", strings.Repeat("k", 9), nil, false), "key"},
		"not UTF-8":   {c.Store(ctxT(t), "t", "\xff", nil, false), "key"},
		"large value": {c.Store(ctxT(t), "t", "k", []byte("12345"), false), "val"},
	} {
		var fe *fault.Error
		require.ErrorAs(t, tc.err, &fe, name)
		assert.Equal(t, fault.InvalidArgument, fe.Reason, name)
		assert.Equal(t, tc.field, fe.Field, name)
	}
	_, err := c.Get("t", "")
	assert.ErrorIs(t, err, fault.ErrInvalidArgument)
}

func TestQuotaHoldsAndOverwritesAreFree(t *testing.T) {
	c, acc := newCache(t, 2)
	require.NoError(t, c.Store(ctxT(t), "t", "a", nil, false))
	require.NoError(t, c.Store(ctxT(t), "t", "b", nil, false))
	require.NoError(t, c.Store(ctxT(t), "t", "a", []byte("2"), false), "an overwrite needs no slot")
	assert.ErrorIs(t, c.Store(ctxT(t), "t", "c", nil, false), fault.ErrQuotaExceeded)
	assert.EqualValues(t, 2, acc.Ledger().Held("t"))
}

func TestDryRunChangesNothing(t *testing.T) {
	c, acc := newCache(t, 1)
	require.NoError(t, c.Store(ctxT(t), "t", "a", nil, true))
	assert.Zero(t, c.Data().Len("t"))
	assert.Zero(t, acc.Ledger().Held("t"))
	require.NoError(t, c.Store(ctxT(t), "t", "a", nil, false))
	assert.ErrorIs(t, c.Store(ctxT(t), "t", "b", nil, true), fault.ErrQuotaExceeded, "a dry run still checks the quota")
}

func TestALapsedLeaseIsRenewedOnce(t *testing.T) {
	c, acc := newCache(t, 5)
	require.NoError(t, c.Store(ctxT(t), "t", "a", nil, false))
	require.NoError(t, acc.Release(context.Background(), "", c.Quota().LeaseID())) // as if the lease had lapsed
	require.NoError(t, c.Store(ctxT(t), "t", "b", nil, false), "the replica reports its holdings and retries")
	assert.EqualValues(t, 2, acc.Ledger().Held("t"))
}

func TestReleaseGivesTheSlotsBack(t *testing.T) {
	c, acc := newCache(t, 5)
	require.NoError(t, c.Store(ctxT(t), "t", "a", nil, false))
	require.NoError(t, c.Release(ctxT(t)))
	assert.Zero(t, acc.Ledger().Held("t"))
}

func TestDumpStreamsInOrderAndStopsAtTheFirstError(t *testing.T) {
	c, _ := newCache(t, 100)
	c.limits.DumpBatch = 2
	for _, k := range []string{"c", "a", "b"} {
		require.NoError(t, c.Store(ctxT(t), "t", k, []byte(k), false))
	}
	var keys []string
	require.NoError(t, c.Dump("t", func(k string, v []byte) error { keys = append(keys, k); return nil }))
	assert.Equal(t, []string{"c", "a", "b"}, keys)
	stop := errors.New("gone")
	n := 0
	assert.ErrorIs(t, c.Dump("t", func(string, []byte) error { n++; return stop }), stop)
	assert.Equal(t, 1, n)
	require.NoError(t, c.Dump("nobody", func(string, []byte) error { return stop }))
}

// counting counts the Reserve calls that reach Accounts.
type counting struct {
	accounts.Local
	reserves atomic.Int64
}

func (c *counting) Reserve(ctx context.Context, leaseID, tenant string, count, least, seq int64, dryRun bool) (int64, error) {
	c.reserves.Add(1)
	return c.Local.Reserve(ctx, leaseID, tenant, count, least, seq, dryRun)
}

func TestConcurrentStoresOfTheSameNewKeyLeakNoSlots(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 3}}), time.Hour)
	a := New(accounts.Local{Service: acc}, "a", Limits{}, quiet)
	b := New(accounts.Local{Service: acc}, "b", Limits{}, quiet)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { assert.NoError(t, a.Store(ctxT(t), "t", "same", []byte("v"), false)) })
	}
	wg.Wait()
	require.Equal(t, 1, a.Data().Len("t"))
	require.NoError(t, a.Quota().Report(ctxT(t)))
	assert.EqualValues(t, 1, acc.Ledger().Held("t"), "one key, one slot: none leaked")
	for _, k := range []string{"x", "y"} {
		require.NoError(t, b.Store(ctxT(t), "t", k, nil, false), "the rest of the quota is usable elsewhere")
	}
	assert.ErrorIs(t, b.Store(ctxT(t), "t", "z", nil, false), fault.ErrQuotaExceeded)
}

func TestNewKeysReserveInBlocksAndSpareSlotsGoBackWithReports(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 100000}}), time.Hour)
	auth := &counting{Local: accounts.Local{Service: acc}}
	c := New(auth, "r", Limits{}, quiet)
	const keys = 1000
	for i := range keys {
		require.NoError(t, c.Store(ctxT(t), "t", fmt.Sprint("k", i), nil, false))
	}
	assert.Less(t, auth.reserves.Load(), int64(keys/20), "blocks, not one call per key")
	assert.EqualValues(t, keys+c.Data().Spare("t"), acc.Ledger().Held("t"))

	require.NoError(t, c.Quota().Report(ctxT(t)))
	require.NoError(t, c.Quota().Report(ctxT(t))) // no new key since the last report
	assert.Zero(t, c.Data().Spare("t"))
	assert.EqualValues(t, keys, acc.Ledger().Held("t"), "unused slots are back at Accounts")
	before := auth.reserves.Load()
	require.NoError(t, c.Store(ctxT(t), "t", "one-more", nil, false))
	assert.Equal(t, before+2, auth.reserves.Load(), "one slot, and the bytes of the key")
	assert.EqualValues(t, keys+1, acc.Ledger().Held("t"), "after a quiet period, one slot at a time again")
}

func TestLeaseIDsAreUniquePerProcess(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 2}}), time.Hour)
	a := New(accounts.Local{Service: acc}, "host", Limits{}, quiet)
	b := New(accounts.Local{Service: acc}, "host", Limits{}, quiet)
	assert.NotEqual(t, a.Quota().LeaseID(), b.Quota().LeaseID())
	require.NoError(t, a.Store(ctxT(t), "t", "a1", nil, false))
	require.NoError(t, a.Store(ctxT(t), "t", "a2", nil, false))
	// b reporting its (empty) holdings does not wipe a's.
	require.NoError(t, b.Quota().Report(ctxT(t)))
	assert.ErrorIs(t, b.Store(ctxT(t), "t", "b1", nil, false), fault.ErrQuotaExceeded)
	assert.EqualValues(t, 2, acc.Ledger().Held("t"))
}

// gated holds every Reserve of tenant "slow" until open is closed.
type gated struct {
	accounts.Local
	entered chan struct{}
	open    chan struct{}
}

func (g *gated) Reserve(ctx context.Context, leaseID, tenant string, count, least, seq int64, dryRun bool) (int64, error) {
	if tenant == "slow" {
		g.entered <- struct{}{}
		<-g.open
	}
	return g.Local.Reserve(ctx, leaseID, tenant, count, least, seq, dryRun)
}

func TestNoLockIsHeldAcrossAReservation(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{
		"slow": {MaxCacheKeys: 10}, "fast": {MaxCacheKeys: 10},
	}), time.Hour)
	g := &gated{Local: accounts.Local{Service: acc}, entered: make(chan struct{}, 1), open: make(chan struct{})}
	c := New(g, "r", Limits{}, quiet)
	// One slow key, then its spare slots go back, so the next one reserves.
	close(g.open)
	require.NoError(t, c.Store(ctxT(t), "slow", "old", nil, false))
	<-g.entered
	require.NoError(t, c.Quota().Report(ctxT(t)))
	require.NoError(t, c.Quota().Report(ctxT(t)))
	g.open = make(chan struct{})

	done := make(chan error, 1)
	go func() { done <- c.Store(ctxT(t), "slow", "new", nil, false) }()
	<-g.entered // the reservation is at Accounts, and stays there
	require.NoError(t, c.Store(ctxT(t), "slow", "old", []byte("2"), false), "an overwrite of the same tenant")
	require.NoError(t, c.Store(ctxT(t), "fast", "k", nil, false), "a new key of another tenant")
	require.NoError(t, c.Quota().Report(ctxT(t)), "a lease report")
	close(g.open)
	require.NoError(t, <-done)
	assert.Equal(t, 2, c.Data().Len("slow"))
}

func TestInsertionOrderHoldsAcrossBlocksThroughTrimAndDump(t *testing.T) {
	c, _ := newCache(t, 10_000)
	var want []string
	for i := range 2*orderBlock + 500 { // three blocks, the last one partly full
		k := fmt.Sprintf("k%05d", i)
		want = append(want, k)
		require.NoError(t, c.Store(ctxT(t), "t", k, []byte("v"), false))
	}
	dump := func() []string {
		var keys []string
		require.NoError(t, c.Dump("t", func(k string, _ []byte) error { keys = append(keys, k); return nil }))
		return keys
	}
	require.Equal(t, want, dump())

	// Accounts admits fewer slots than held: the newest keys go, across a block boundary.
	held := int64(len(want)) + c.Data().Spare("t")
	dropped := c.store.trim(map[string]int64{"t": held}, map[string]int64{"t": orderBlock - 1})
	assert.Equal(t, len(want)-(orderBlock-1), dropped)
	assert.Equal(t, orderBlock-1, c.Data().Len("t"))
	assert.Equal(t, want[:orderBlock-1], dump())
	_, err := c.Get("t", want[orderBlock])
	assert.ErrorIs(t, err, fault.ErrKeyNotFound)

	require.NoError(t, c.Store(ctxT(t), "t", "new", []byte("v"), false))
	require.NoError(t, c.Store(ctxT(t), "t", "newer", []byte("v"), false))
	assert.Equal(t, append(want[:orderBlock-1:orderBlock-1], "new", "newer"), dump())
}

// A client that opens Dumps and never reads them holds each one's batch
// and message in the replica's memory: a tenant gets MaxDumps at a time,
// the next is RateLimited with a retry delay, other tenants are not
// affected, and a finished Dump frees its place.
func TestATenantsDumpsInProgressAreBounded(t *testing.T) {
	c := New(nil, "r1", Limits{MaxDumps: 2}, quiet)
	// Each tenant holds one item, so a Dump reaches its sender.
	for _, tenant := range []string{"t", "u"} {
		td := c.Data().tenant(tenant)
		td.mu.Lock()
		td.insert("k", []byte("v"))
		td.mu.Unlock()
	}

	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 2)
	for range 2 {
		go func() {
			done <- c.Dump("t", func(string, []byte) error {
				started <- struct{}{}
				<-release // a reader that stopped reading
				return nil
			})
		}()
		<-started
	}

	err := c.Dump("t", func(string, []byte) error { return nil })
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, fault.RateLimited, fe.Reason)
	assert.Positive(t, fe.RetryAfter)

	var got []string
	require.NoError(t, c.Dump("u", func(k string, _ []byte) error { got = append(got, k); return nil }), "another tenant dumps")
	assert.Equal(t, []string{"k"}, got)

	close(release)
	for range 2 {
		require.NoError(t, <-done)
	}
	require.NoError(t, c.Dump("t", func(string, []byte) error { return nil }), "finished Dumps free their places")
}

// hungLease holds every Lease while hang is set, until open is closed, as
// an Accounts behind a network partition would.
type hungLease struct {
	accounts.Local
	hang    atomic.Bool
	entered chan struct{}
	open    chan struct{}
}

func (h *hungLease) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	if h.hang.Load() {
		h.entered <- struct{}{}
		<-h.open
	}
	return h.Local.Lease(ctx, leaseID, holdings, resolved, report)
}

func TestANewKeyDoesNotWaitForAHungLeaseReport(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 10}}), time.Hour)
	h := &hungLease{Local: accounts.Local{Service: acc}, entered: make(chan struct{}, 1), open: make(chan struct{})}
	c := New(h, "r", Limits{}, quiet)
	require.NoError(t, c.Store(ctxT(t), "t", "old", nil, false))
	// The spare slots go back, so the next new key reserves.
	require.NoError(t, c.Quota().Report(ctxT(t)))
	require.NoError(t, c.Quota().Report(ctxT(t)))
	require.Zero(t, c.Data().Spare("t"))

	h.hang.Store(true)
	reported := make(chan error, 1)
	go func() { reported <- c.Quota().Report(ctxT(t)) }()
	<-h.entered // the periodic report is stuck at Accounts, holding its lock
	// Before the fix the Store waited on the report's lock, which no
	// context ends; the guard turns that hang into a failure.
	ctx := ctxT(t)
	stored := make(chan error, 1)
	go func() { stored <- c.Store(ctx, "t", "new", nil, false) }()
	select {
	case err := <-stored:
		require.NoError(t, err, "the lease is registered: the reservation goes ahead")
	case <-ctx.Done():
		close(h.open)
		t.Fatal("a new key waited for the hung report")
	}
	close(h.open)
	require.NoError(t, <-reported)
	assert.Equal(t, 2, c.Data().Len("t"))
}

// Issue 24, item 6: 30,000 dry-run Stores of new keys from a tenant at its
// quota made 30,026 calls to Accounts. A refusal is remembered for
// refusalTTL: the dry runs after it are refused without asking.
func TestDryRunsAtTheQuotaAskAccountsOnce(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 1}}), time.Hour)
	auth := &counting{Local: accounts.Local{Service: acc}}
	c := New(auth, "r", Limits{}, quiet)
	require.NoError(t, c.Store(ctxT(t), "t", "only", nil, false))
	require.NoError(t, c.Store(ctxT(t), "t", "only", nil, true), "an existing key fits without asking")
	before, start := auth.reserves.Load(), time.Now()
	for i := range 1000 {
		assert.ErrorIs(t, c.Store(ctxT(t), "t", fmt.Sprint("new", i), nil, true), fault.ErrQuotaExceeded)
	}
	periods := int64(time.Since(start)/refusalTTL) + 1
	assert.LessOrEqual(t, auth.reserves.Load()-before, periods, "one question per refusalTTL, not one per dry run")
	assert.EqualValues(t, 1, acc.Ledger().Held("t"), "dry runs reserve nothing")
}

// Issue 24 item 5: a tenant's bytes are held across replicas as its keys
// are, and a Store beyond max_cache_bytes is refused with a QuotaExceeded
// naming max_cache_bytes; overwrites with smaller values give bytes back.
func TestByteQuotaHoldsAcrossReplicas(t *testing.T) {
	const cap = 10 << 10
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 1000, MaxCacheBytes: cap}}), time.Hour)
	a := New(accounts.Local{Service: acc}, "a", Limits{}, quiet)
	b := New(accounts.Local{Service: acc}, "b", Limits{}, quiet)
	val := make([]byte, 1<<10-2) // with a 2-byte key: 1 KiB an item
	for i := range 10 {
		require.NoError(t, a.Store(ctxT(t), "t", fmt.Sprint("k", i), val, false))
	}
	err := a.Store(ctxT(t), "t", "kA", val, false)
	require.ErrorIs(t, err, fault.ErrQuotaExceeded)
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, fault.MaxCacheBytes, fe.Quota)
	assert.EqualValues(t, cap, fe.Limit)
	assert.Equal(t, "tenant:t", fe.Subject)
	require.ErrorIs(t, b.Store(ctxT(t), "t", "kB", val, false), fault.ErrQuotaExceeded, "another replica has none of the bytes either")
	require.ErrorIs(t, b.Store(ctxT(t), "t", "kB", val, true), fault.ErrQuotaExceeded, "nor does a dry run")
	require.ErrorIs(t, a.Store(ctxT(t), "t", "k0", append(val, 'x'), false), fault.ErrQuotaExceeded, "an overwrite may not grow past it")
	assert.EqualValues(t, cap, a.Data().Bytes("t"))

	// Half the values shrink to nothing: their bytes go back with a report.
	for i := range 5 {
		require.NoError(t, a.Store(ctxT(t), "t", fmt.Sprint("k", i), nil, false))
	}
	require.NoError(t, a.Quota().Report(ctxT(t)))
	require.NoError(t, a.Quota().Report(ctxT(t)))
	assert.EqualValues(t, a.Data().Bytes("t"), acc.Ledger().Held(fault.BytesOf("t")))
	for i := range 4 {
		require.NoError(t, b.Store(ctxT(t), "t", fmt.Sprint("b", i), val, false), "freed bytes are usable on another replica")
	}
	require.NoError(t, b.Quota().Report(ctxT(t)))
	assert.LessOrEqual(t, acc.Ledger().Held(fault.BytesOf("t")), int64(cap))

	// StoreMany stores what fits and refuses the rest, item by item.
	var errs []error
	items := []Item{{"m1", val}, {"m2", val}, {"m3", val}}
	require.NoError(t, b.StoreMany(ctxT(t), "t", items, false, func(_ int, err error) { errs = append(errs, err) }))
	require.Len(t, errs, 3)
	stored := 0
	for _, err := range errs {
		if err == nil {
			stored++
		} else {
			assert.ErrorIs(t, err, fault.ErrQuotaExceeded)
		}
	}
	assert.Less(t, stored, 3, "the batch does not go past the byte cap")
	assert.LessOrEqual(t, a.Data().Bytes("t")+b.Data().Bytes("t"), int64(cap))
}

func TestTenantsWithoutAByteCapStoreAsBefore(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 10}}), time.Hour)
	c := New(accounts.Local{Service: acc}, "a", Limits{}, quiet)
	for i := range 10 {
		require.NoError(t, c.Store(ctxT(t), "t", fmt.Sprint("k", i), make([]byte, 1<<20), false))
	}
	assert.ErrorIs(t, c.Store(ctxT(t), "t", "k10", nil, false), fault.ErrQuotaExceeded)
}
