package cache

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/fault"
)

// fakeClock replaces the quota's monotonic clock.
type fakeClock struct{ now atomic.Int64 }

func (f *fakeClock) read() time.Duration     { return time.Duration(f.now.Load()) }
func (f *fakeClock) advance(d time.Duration) { f.now.Add(int64(d)) }

func withClock(c *Cache) *fakeClock {
	f := &fakeClock{}
	c.quota.clock = f.read
	return f
}

func TestAReplicaPastItsOwnLeaseDeadlineServesNoKeyUntilItReports(t *testing.T) {
	const ttl = 10 * time.Second
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 5}}), ttl)
	c := New(accounts.Local{Service: acc}, "r", Limits{}, quiet)
	clock := withClock(c)
	require.NoError(t, c.Store(ctxT(t), "t", "k", []byte("v"), false))
	assert.Equal(t, ttl-LeaseMargin(ttl), c.Quota().ValidFor(), "counted from the report, shorter than Accounts' TTL")

	clock.advance(ttl - LeaseMargin(ttl) - time.Nanosecond)
	_, err := c.Get("t", "k")
	require.NoError(t, err, "still within the lease")

	clock.advance(time.Nanosecond) // the replica's deadline: Accounts' is LeaseMargin later
	_, err = c.Get("t", "k")
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, fault.ReplicaFenced, fe.Reason)
	assert.Positive(t, fe.RetryAfter)
	assert.ErrorIs(t, c.Store(ctxT(t), "t", "k", []byte("w"), false), fault.ErrReplicaFenced, "an overwrite")
	assert.ErrorIs(t, c.Store(ctxT(t), "t", "k", []byte("w"), true), fault.ErrReplicaFenced, "a dry run")
	assert.ErrorIs(t, c.Dump("t", func(string, []byte) error { return nil }), fault.ErrReplicaFenced)
	require.NoError(t, c.GetMany("t", []string{"k", "absent"}, func(i int, val []byte, err error) {
		assert.ErrorIs(t, err, fault.ErrReplicaFenced, "GetMany's key %d", i)
		assert.Nil(t, val, "a fenced replica sends no value with its refusal (key %d)", i)
	}))

	require.NoError(t, c.Quota().Report(ctxT(t)), "re-registered")
	got, err := c.Get("t", "k")
	require.NoError(t, err)
	assert.Equal(t, "v", string(got), "the overwrite refused while fenced was not applied")
}

// slowLease answers every report late, by the fake clock: the replica's
// lease is counted from when it sent the report, not when the answer came.
type slowLease struct {
	accounts.Local
	clock *fakeClock
	delay time.Duration
}

func (s *slowLease) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	admitted, ttl, err := s.Local.Lease(ctx, leaseID, holdings, resolved, report)
	s.clock.advance(s.delay)
	return admitted, ttl, err
}

func TestTheLeaseIsCountedFromWhenTheReportWasSent(t *testing.T) {
	const ttl = 10 * time.Second
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 5}}), ttl)
	sl := &slowLease{Local: accounts.Local{Service: acc}}
	c := New(sl, "r", Limits{}, quiet)
	sl.clock, sl.delay = withClock(c), ttl // an answer read a whole TTL later (a paused replica)
	require.NoError(t, c.Quota().Report(ctxT(t)))
	assert.Equal(t, -LeaseMargin(ttl), c.Quota().ValidFor())
	assert.ErrorIs(t, c.Store(ctxT(t), "t", "k", nil, false), fault.ErrReplicaFenced)

	sl.delay = ttl / 2
	require.NoError(t, c.Quota().Report(ctxT(t)))
	assert.Equal(t, ttl/2-LeaseMargin(ttl), c.Quota().ValidFor())
	require.NoError(t, c.Store(ctxT(t), "t", "k", nil, false))
}

func TestAStoreWhoseCallerIsGoneIsNotApplied(t *testing.T) {
	c, acc := newCache(t, 5)
	require.NoError(t, c.Store(ctxT(t), "t", "k", []byte("v0"), false))
	for name, ctx := range map[string]context.Context{
		"canceled":          canceled(),
		"deadline exceeded": expired(),
	} {
		assert.Error(t, c.Store(ctx, "t", "k", []byte("v1"), false), name)
		assert.Error(t, c.Store(ctx, "t", "new", []byte("v1"), false), name)
	}
	got, err := c.Get("t", "k")
	require.NoError(t, err)
	assert.Equal(t, "v0", string(got))
	_, err = c.Get("t", "new")
	assert.ErrorIs(t, err, fault.ErrKeyNotFound)
	require.NoError(t, c.Quota().Report(ctxT(t)))
	require.NoError(t, c.Quota().Report(ctxT(t)))
	assert.EqualValues(t, 1, acc.Ledger().Held("t"), "no slot taken for the abandoned new key")
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func expired() context.Context {
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	_ = cancel // already done; nothing to release
	return ctx
}

func TestEveryWriteGetsANewRevisionAndAConditionalStoreRefusesAStaleOne(t *testing.T) {
	c, _ := newCache(t, 5)
	r1, err := c.StoreIf(ctxT(t), "t", "k", []byte("a"), Cond{Absent: true}, false)
	require.NoError(t, err)
	require.Positive(t, r1)
	val, rev, err := c.GetRevision("t", "k")
	require.NoError(t, err)
	assert.Equal(t, "a", string(val))
	assert.Equal(t, r1, rev)

	r2, err := c.StoreIf(ctxT(t), "t", "k", []byte("b"), Cond{Revision: r1}, false)
	require.NoError(t, err)
	assert.Greater(t, r2, r1)

	_, err = c.StoreIf(ctxT(t), "t", "k", []byte("c"), Cond{Revision: r1}, false)
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, fault.RevisionMismatch, fe.Reason)
	assert.Equal(t, r2, fe.Revision, "the refusal says the revision now")
	_, err = c.StoreIf(ctxT(t), "t", "k", []byte("c"), Cond{Revision: r1}, true)
	assert.ErrorIs(t, err, fault.ErrRevisionMismatch, "a dry run checks the condition")
	_, err = c.StoreIf(ctxT(t), "t", "k", []byte("c"), Cond{Absent: true}, false)
	assert.ErrorIs(t, err, fault.ErrRevisionMismatch, "only if absent, and it exists")
	_, err = c.StoreIf(ctxT(t), "t", "nope", []byte("c"), Cond{Revision: r2}, false)
	require.ErrorAs(t, err, &fe)
	assert.Zero(t, fe.Revision, "absent")
	_, err = c.StoreIf(ctxT(t), "t", "k", []byte("c"), Cond{Revision: r2, Absent: true}, false)
	assert.ErrorIs(t, err, fault.ErrInvalidArgument)
	_, err = c.StoreIf(ctxT(t), "t", "k", []byte("c"), Cond{Revision: -1}, false)
	assert.ErrorIs(t, err, fault.ErrInvalidArgument)

	val, rev, err = c.GetRevision("t", "k")
	require.NoError(t, err)
	assert.Equal(t, "b", string(val), "no refused write was applied")
	assert.Equal(t, r2, rev)
}

func TestConditionalStoresMakeReadModifyWriteAtomic(t *testing.T) {
	c, _ := newCache(t, 5)
	_, err := c.StoreIf(ctxT(t), "t", "n", []byte("0"), Cond{Absent: true}, false)
	require.NoError(t, err)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				for {
					val, rev, err := c.GetRevision("t", "n")
					if !assert.NoError(t, err) {
						return
					}
					n, _ := strconv.Atoi(string(val))
					_, err = c.StoreIf(ctxT(t), "t", "n", []byte(strconv.Itoa(n+1)), Cond{Revision: rev}, false)
					if err == nil {
						break
					}
					if !assert.ErrorIs(t, err, fault.ErrRevisionMismatch) {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	val, err := c.Get("t", "n")
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(workers*each), string(val), "no increment lost")
}

func TestARevisionIsNeverReusedAfterTheKeyIsDroppedAndStoredAgain(t *testing.T) {
	c, _ := newCache(t, 5)
	r1, err := c.StoreIf(ctxT(t), "t", "k", []byte("a"), Cond{}, false)
	require.NoError(t, err)
	held := int64(c.Data().Len("t")) + c.Data().Spare("t")
	c.store.trim(map[string]int64{"t": held}, map[string]int64{"t": 0}) // Accounts admitted none
	_, err = c.Get("t", "k")
	require.ErrorIs(t, err, fault.ErrKeyNotFound)
	r2, err := c.StoreIf(ctxT(t), "t", "k", []byte("b"), Cond{}, false)
	require.NoError(t, err)
	assert.Greater(t, r2, r1)
	_, err = c.StoreIf(ctxT(t), "t", "k", []byte("c"), Cond{Revision: r1}, false)
	assert.ErrorIs(t, err, fault.ErrRevisionMismatch, "the old incarnation's revision does not match the new one")
}

// signalLease tells the test when a report reached Accounts.
type signalLease struct {
	accounts.Local
	reported chan struct{}
}

func (s *signalLease) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	admitted, ttl, err := s.Local.Lease(ctx, leaseID, holdings, resolved, report)
	s.reported <- struct{}{}
	return admitted, ttl, err
}

func TestAFencedReplicaAskedForAKeyReportsAtOnce(t *testing.T) {
	const ttl = 10 * time.Second
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 5}}), ttl)
	sl := &signalLease{Local: accounts.Local{Service: acc}, reported: make(chan struct{}, 1)}
	c := New(sl, "r", Limits{}, quiet)
	clock := withClock(c)
	require.NoError(t, c.Store(ctxT(t), "t", "k", []byte("v"), false))
	<-sl.reported
	clock.advance(ttl)
	_, err := c.Get("t", "k")
	require.ErrorIs(t, err, fault.ErrReplicaFenced)

	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, time.Hour) }() // no tick within the test
	defer func() { cancel(); <-done }()
	<-sl.reported           // the loop reported, kicked by the Get
	c.quota.reportMu.Lock() // the report has finished
	c.quota.reportMu.Unlock()
	got, err := c.Get("t", "k")
	require.NoError(t, err, "re-registered without waiting for the next tick")
	assert.Equal(t, "v", string(got))
}

// lateLease gives up on one report (as a replica does when Accounts
// answers none within the interval) and keeps it, so the test delivers
// it later, after a newer one, as a network that held it or an Accounts
// that was paused with it can.
type lateLease struct {
	accounts.Local
	mu   sync.Mutex
	hold bool
	held *lateReport
}

type lateReport struct {
	holdings, resolved map[string]int64
	report             int64
}

func (l *lateLease) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	l.mu.Lock()
	if l.hold {
		l.hold, l.held = false, &lateReport{holdings, resolved, report}
		l.mu.Unlock()
		return nil, 0, fault.AccountsDown(context.DeadlineExceeded)
	}
	l.mu.Unlock()
	return l.Local.Lease(ctx, leaseID, holdings, resolved, report)
}

// Issue 23: a report the replica gave up on reaches Accounts after a newer
// one. Applied, its older holdings would free slots the replica still
// uses: another replica was granted them, and the next report dropped
// keys the first had acknowledged. Reports are numbered; the late one is
// refused.
func TestAReportGivenUpOnCannotReplaceANewerOneAtAccounts(t *testing.T) {
	acc := accounts.NewService(accounts.Accounts(map[string]accounts.Account{"t": {MaxCacheKeys: 3}}), time.Hour)
	l := &lateLease{Local: accounts.Local{Service: acc}}
	c := New(l, "r", Limits{}, quiet)
	ctx := ctxT(t)
	require.NoError(t, c.Store(ctx, "t", "k1", []byte("v"), false))
	require.NoError(t, c.Quota().Report(ctx))
	require.NoError(t, c.Quota().Report(ctx)) // the spare slots went back
	l.mu.Lock()
	l.hold = true
	l.mu.Unlock()
	require.Error(t, c.Quota().Report(ctx), "the replica gave up on this report")
	require.NoError(t, c.Store(ctx, "t", "k2", []byte("v"), false))
	require.NoError(t, c.Store(ctx, "t", "k3", []byte("v"), false))
	require.NoError(t, c.Quota().Report(ctx), "a newer report: three keys")

	late := l.held
	require.NotNil(t, late)
	assert.EqualValues(t, 1, late.holdings["t"], "the late report says one key")
	_, _, err := l.Local.Lease(ctx, c.Quota().LeaseID(), late.holdings, late.resolved, late.report)
	assert.ErrorIs(t, err, fault.ErrInvalidArgument, "the late report is refused")
	assert.EqualValues(t, 3, acc.Ledger().Held("t"))

	other := New(accounts.Local{Service: acc}, "other", Limits{}, quiet)
	assert.ErrorIs(t, other.Store(ctx, "t", "k4", []byte("v"), false), fault.ErrQuotaExceeded,
		"no slot of the first replica's keys is granted to another")
	require.NoError(t, c.Quota().Report(ctx))
	for _, k := range []string{"k1", "k2", "k3"} {
		_, err := c.Get("t", k)
		assert.NoError(t, err, "acknowledged key %s kept", k)
	}
}
