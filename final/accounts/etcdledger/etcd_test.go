package etcdledger

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/internal/etcdtest"
)

// etcdLedgers opens n ledgers on one etcd under a prefix of their own: n
// Accounts processes sharing a ledger.
func etcdLedgers(t *testing.T, eps []string, ttl time.Duration, n int) []*EtcdLedger {
	t.Helper()
	prefix := fmt.Sprintf("/test/%s/", t.Name())
	var ls []*EtcdLedger
	for range n {
		l, err := OpenEtcdLedger(EtcdOptions{Endpoints: eps, Prefix: prefix, TTL: ttl})
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		ls = append(ls, l)
	}
	return ls
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The behaviour both engines share: the in-process Ledger and the
// EtcdLedger answer every call alike. With etcd, every other call goes
// through a second ledger (a second Accounts process) on the same etcd.
func TestBothLedgerEnginesKeepTheSameBooks(t *testing.T) {
	engines := map[string]func(t *testing.T) (accounts.LedgerEngine, accounts.LedgerEngine){
		"memory": func(t *testing.T) (accounts.LedgerEngine, accounts.LedgerEngine) {
			l := accounts.NewLedger(time.Minute)
			return l, l
		},
	}
	if c := startEtcd(t); c != nil {
		engines["etcd"] = func(t *testing.T) (accounts.LedgerEngine, accounts.LedgerEngine) {
			ls := etcdLedgers(t, c.Endpoints(), time.Minute, 2)
			return ls[0], ls[1]
		}
	}
	engines["bbolt, reopened"] = func(t *testing.T) (accounts.LedgerEngine, accounts.LedgerEngine) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		a, err := accounts.OpenLedger(accounts.LedgerOptions{TTL: time.Minute, Path: path})
		require.NoError(t, err)
		return a, reopen{a, path}
	}
	for name, open := range engines {
		t.Run(name, func(t *testing.T) {
			// Issue 24 item 5: a tenant's bytes are a budget kept like its
			// slots: least is granted or refused whole, never beyond max
			// across leases, and it outlives a restart (bbolt) or another
			// Accounts (etcd).
			t.Run("byte budgets", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				name := fault.BytesOf("t")
				limit := func(string) int64 { return 1000 }
				_, err := a.Register(ctx, "", "a", map[string]int64{name: 600}, nil, 0, limit)
				require.NoError(t, err)
				n, err := a.Reserve(ctx, "", "a", name, 1000, 10, 300, 1, false)
				require.NoError(t, err)
				assert.EqualValues(t, 300, n, "least, though a quarter of what is left is less")
				if r, ok := b.(reopen); ok {
					b = r.reopened(t)
				}
				_, err = b.Register(ctx, "", "b", nil, nil, 0, limit)
				require.NoError(t, err)
				_, err = b.Reserve(ctx, "", "b", name, 1000, 200, 200, 1, false)
				var fe *fault.Error
				require.ErrorAs(t, err, &fe, "600 + 300 held: 200 more is over")
				assert.Equal(t, fault.MaxCacheBytes, fe.Quota)
				assert.Equal(t, "tenant:t", fe.Subject)
				n, err = b.Reserve(ctx, "", "b", name, 1000, 200, 100, 1, false)
				require.NoError(t, err)
				assert.EqualValues(t, 100, n, "exactly what is left")
				assert.EqualValues(t, 1000, b.Held(name))
				assert.Zero(t, b.Held("t"), "bytes are not slots")
			})
			t.Run("never more than max across leases", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				limit := func(string) int64 { return 3 }
				_, err := a.Register(ctx, "", "a", nil, nil, 0, limit)
				require.NoError(t, err)
				_, err = b.Register(ctx, "", "b", nil, nil, 0, limit)
				require.NoError(t, err)
				_, err = a.Reserve(ctx, "", "a", "t", 3, 1, 1, 0, false)
				require.NoError(t, err)
				_, err = b.Reserve(ctx, "", "b", "t", 3, 1, 1, 0, false)
				require.NoError(t, err)
				_, err = a.Reserve(ctx, "", "a", "t", 3, 1, 1, 0, true)
				require.NoError(t, err, "a dry run takes nothing")
				_, err = b.Reserve(ctx, "", "b", "t", 3, 1, 1, 0, false)
				require.NoError(t, err)
				_, err = a.Reserve(ctx, "", "a", "t", 3, 1, 1, 0, false)
				assert.ErrorIs(t, err, fault.ErrQuotaExceeded)
				assert.EqualValues(t, 3, a.Held("t"))
				assert.EqualValues(t, 3, b.Held("t"))
				_, err = b.Reserve(ctx, "", "nobody", "t", 3, 1, 1, 0, false)
				assert.ErrorIs(t, err, fault.ErrLeaseNotFound)
				assert.Equal(t, 2, a.Leases())
			})
			// Issue 23: a replica gives up on a report (Accounts was slow,
			// paused, or the network held it) and sends a newer one; the
			// first can still reach the ledger after the second. Applied,
			// its older holdings would free slots the replica still uses,
			// another replica would be granted them, and the next report
			// would drop keys the first replica had acknowledged.
			t.Run("a report that arrives after a newer one is refused", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				limit := func(string) int64 { return 3 }
				// Report 2: three keys (a grant settled after report 1 was sent).
				_, err := a.Register(ctx, "", "r", map[string]int64{"t": 3}, nil, 2, limit)
				require.NoError(t, err)
				if r, ok := b.(reopen); ok {
					b = r.reopened(t) // the number outlives a restart
					a = b
				}
				// Report 1, one key, arrives now.
				_, err = b.Register(ctx, "", "r", map[string]int64{"t": 1}, nil, 1, limit)
				require.ErrorIs(t, err, fault.ErrInvalidArgument)
				_, err = a.Register(ctx, "", "r", map[string]int64{"t": 1}, nil, 2, limit)
				require.ErrorIs(t, err, fault.ErrInvalidArgument, "a report's number is applied once")
				assert.EqualValues(t, 3, a.Held("t"), "the newer report's holdings stand")
				_, err = b.Register(ctx, "", "other", nil, nil, 1, limit)
				require.NoError(t, err)
				_, err = b.Reserve(ctx, "", "other", "t", 3, 1, 1, 1, false)
				require.ErrorIs(t, err, fault.ErrQuotaExceeded, "no slot of the replica's keys is granted to another")
				admitted, err := b.Register(ctx, "", "r", map[string]int64{"t": 2}, nil, 3, limit)
				require.NoError(t, err)
				assert.EqualValues(t, 2, admitted["t"], "the next report is applied")
				assert.EqualValues(t, 2, a.Held("t"))
				admitted, err = a.Register(ctx, "", "r", map[string]int64{"t": 3}, nil, 0, limit)
				require.NoError(t, err, "a report without a number (a replica from before) is applied")
				assert.EqualValues(t, 3, admitted["t"])
			})
			t.Run("register admits only what fits", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				limit := func(string) int64 { return 3 }
				_, err := b.Register(ctx, "", "b", map[string]int64{"t": 2}, nil, 0, limit)
				require.NoError(t, err)
				admitted, err := a.Register(ctx, "", "a", map[string]int64{"t": 2}, nil, 0, limit)
				require.NoError(t, err)
				assert.EqualValues(t, 1, admitted["t"])
				assert.EqualValues(t, 3, a.Held("t"))
				admitted, err = a.Register(ctx, "", "b", map[string]int64{"t": 1}, nil, 0, limit)
				require.NoError(t, err)
				assert.EqualValues(t, 1, admitted["t"], "re-registering replaces a lease's holdings")
				assert.EqualValues(t, 2, b.Held("t"))
			})
			t.Run("reports settle grants by seq", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				limit := func(string) int64 { return 100 }
				_, err := a.Register(ctx, "", "r", nil, nil, 0, limit)
				require.NoError(t, err)
				n1, err := b.Reserve(ctx, "", "r", "t", 100, 8, 1, 1, false)
				require.NoError(t, err)
				assert.EqualValues(t, 8, n1)
				_, err = a.Register(ctx, "", "r", map[string]int64{}, map[string]int64{"t": 0}, 0, limit)
				require.NoError(t, err)
				assert.EqualValues(t, 8, a.Held("t"), "a report taken before grant 1 arrived: it stays counted")
				_, err = b.Reserve(ctx, "", "r", "t", 100, 4, 1, 2, false)
				require.NoError(t, err)
				assert.EqualValues(t, 12, a.Held("t"))
				_, err = a.Register(ctx, "", "r", map[string]int64{"t": 8}, map[string]int64{"t": 2}, 0, limit)
				require.NoError(t, err)
				assert.EqualValues(t, 8, b.Held("t"), "grant 2 given up: no longer counted")
				_, err = b.Reserve(ctx, "", "r", "t", 100, 4, 1, 2, false)
				assert.ErrorIs(t, err, fault.ErrInvalidArgument, "grant 2 arriving late is refused")
				assert.EqualValues(t, 8, a.Held("t"))
			})
			t.Run("blocks shrink near the limit", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				limit := func(string) int64 { return 100 }
				_, err := a.Register(ctx, "", "r", nil, nil, 0, limit)
				require.NoError(t, err)
				var got []int64
				for seq := int64(1); ; seq++ {
					l := a
					if seq%2 == 0 {
						l = b
					}
					n, err := l.Reserve(ctx, "", "r", "t", 100, 64, 1, seq, false)
					if err != nil {
						require.ErrorIs(t, err, fault.ErrQuotaExceeded)
						break
					}
					got = append(got, n)
				}
				assert.Equal(t, []int64{25, 18, 14, 10, 8, 6, 4, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1}, got)
				assert.EqualValues(t, 100, a.Held("t"))
			})
			t.Run("a lease belongs to its identity; release frees it at once", func(t *testing.T) {
				a, b := open(t)
				ctx := ctxT(t)
				limit := func(string) int64 { return 5 }
				_, err := a.Register(ctx, "cache-1", "cache-1/x", map[string]int64{"t": 5}, nil, 0, limit)
				require.NoError(t, err)
				admitted, err := b.Register(ctx, "cache-2", "cache-1/x", map[string]int64{"t": 5}, nil, 0, limit)
				require.NoError(t, err)
				assert.Zero(t, admitted["t"])
				require.NoError(t, b.Release(ctx, "cache-2", "cache-1/x"))
				_, err = b.Reserve(ctx, "cache-2", "cache-1/x", "t", 5, 1, 1, 1, false)
				assert.Error(t, err)
				assert.EqualValues(t, 5, a.Held("t"), "cache-1's slots are untouched")
				require.NoError(t, b.Release(ctx, "cache-1", "cache-1/x"))
				assert.Zero(t, a.Held("t"), "released without waiting for the TTL")
				assert.Zero(t, a.Leases())
			})
		})
	}
}

// startEtcd starts one etcd member, or returns nil (and logs why) when
// there is none, so the memory engine is still tested.
// reopen is a bbolt ledger that the test closes and opens again from its
// file, as a restarted Accounts would.
type reopen struct {
	*accounts.Ledger
	path string
}

func (r reopen) reopened(t *testing.T) accounts.LedgerEngine {
	require.NoError(t, r.Ledger.Close())
	l, err := accounts.OpenLedger(accounts.LedgerOptions{TTL: time.Minute, Path: r.path})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func startEtcd(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	if why := etcdtest.Missing(); why != "" {
		t.Log(why)
		return nil
	}
	return etcdtest.Start(t, 1)
}

// Two Accounts processes on one etcd, many replicas reserving at once
// through both: together they grant the quota exactly, never a slot more.
func TestTwoAccountsOnOneEtcdNeverGrantMoreThanTheQuota(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ls := etcdLedgers(t, c.Endpoints(), time.Minute, 2)
	ctx := ctxT(t)
	const quota, replicas = 40, 6
	limit := func(string) int64 { return quota }
	for r := range replicas {
		_, err := ls[r%2].Register(ctx, "", fmt.Sprint("r", r), nil, nil, 0, limit)
		require.NoError(t, err)
	}
	var granted atomic.Int64
	var wg sync.WaitGroup
	for r := range replicas {
		wg.Go(func() {
			for seq := int64(1); ; seq++ {
				// Each request through either Accounts, as a replica whose
				// connection moves.
				n, err := ls[int(seq)%2].Reserve(ctx, "", fmt.Sprint("r", r), "t", quota, 3, 1, seq, false)
				if err != nil {
					assert.ErrorIs(t, err, fault.ErrQuotaExceeded)
					return
				}
				granted.Add(n)
			}
		})
	}
	wg.Wait()
	assert.EqualValues(t, quota, granted.Load(), "granted across both processes")
	assert.EqualValues(t, quota, ls[0].Held("t"))
	assert.EqualValues(t, quota, ls[1].Held("t"))
}

// A replica that stops reporting: etcd expires its lease (no Accounts
// process has to notice), and its slots go to the living.
func TestEtcdExpiresADeadReplicasSlots(t *testing.T) {
	c := etcdtest.Start(t, 1)
	const ttl = time.Second // etcd's minimum lease is about 2s: longer, never shorter
	ls := etcdLedgers(t, c.Endpoints(), ttl, 2)
	ctx := ctxT(t)
	limit := func(string) int64 { return 2 }
	_, err := ls[0].Register(ctx, "", "dies", map[string]int64{"t": 2}, nil, 0, limit)
	require.NoError(t, err)
	reported := time.Now()
	_, err = ls[1].Register(ctx, "", "lives", nil, nil, 0, limit)
	require.NoError(t, err)
	_, err = ls[1].Reserve(ctx, "", "lives", "t", 2, 1, 1, 1, false)
	require.ErrorIs(t, err, fault.ErrQuotaExceeded, "the dead replica's slots are held while its lease lasts")
	ls[0].Close() // its Accounts goes too: etcd alone expires the lease

	for ls[1].Held("t") != 0 {
		require.Less(t, time.Since(reported), 30*time.Second, "the lapsed lease's slots are still held")
		_, err := ls[1].Register(ctx, "", "lives", map[string]int64{}, nil, 0, limit)
		require.NoError(t, err)
		<-time.After(50 * time.Millisecond) // etcd's lease clock: nothing to await
	}
	lapsed := time.Since(reported)
	assert.GreaterOrEqual(t, lapsed, ttl, "never before the TTL")
	t.Logf("the dead replica's slots were freed %v after its last report (TTL %v)", lapsed.Round(time.Millisecond), ttl)
	n, err := ls[1].Reserve(ctx, "", "lives", "t", 2, 2, 1, 1, false)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n)
	assert.Equal(t, 1, ls[1].Leases())
}

// With etcd gone, a call fails with Unavailable and a retry delay within
// its deadline, and nothing is granted.
func TestWithEtcdDownTheLedgerIsUnavailableNotWrong(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ls := etcdLedgers(t, c.Endpoints(), time.Minute, 1)
	limit := func(string) int64 { return 2 }
	_, err := ls[0].Register(ctxT(t), "", "r", nil, nil, 0, limit)
	require.NoError(t, err)
	c.Members[0].Kill()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = ls[0].Reserve(ctx, "", "r", "t", 2, 1, 1, 1, false)
	var fe *fault.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, fault.Unavailable, fe.Reason)
	assert.Positive(t, fe.RetryAfter)
	_, err = ls[0].Register(ctx, "", "r", nil, nil, 0, limit)
	assert.ErrorAs(t, err, &fe)

	c.Members[0].Start()
	assert.Zero(t, ls[0].Held("t"), "nothing was granted")
}

// A replica's report and its own reservation racing through two Accounts:
// the report was taken before any grant arrived (it settles none), so
// every grant stays counted, whichever transaction lands first.
func TestAReportRacingAGrantNeverDropsIt(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ls := etcdLedgers(t, c.Endpoints(), time.Minute, 2)
	ctx := ctxT(t)
	limit := func(string) int64 { return 1000 }
	_, err := ls[0].Register(ctx, "", "r", map[string]int64{"t": 0}, nil, 0, limit)
	require.NoError(t, err)
	var granted atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for seq := int64(1); seq <= 60; seq++ {
			n, err := ls[1].Reserve(ctx, "", "r", "t", 1000, 1, 1, seq, false)
			if !assert.NoError(t, err) {
				return
			}
			granted.Add(n)
		}
	})
	wg.Go(func() {
		// Holdings of one key, then none: the lease's count goes up and
		// down while grants arrive.
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			_, err := ls[0].Register(ctx, "", "r", map[string]int64{"t": int64(i % 2)}, map[string]int64{"t": 0}, 0, limit)
			assert.NoError(t, err)
		}
	})
	wg.Wait()
	_, err = ls[0].Register(ctx, "", "r", map[string]int64{"t": 0}, map[string]int64{"t": 0}, 0, limit)
	require.NoError(t, err)
	assert.Equal(t, granted.Load(), ls[0].Held("t"), "every grant still counted")
}
