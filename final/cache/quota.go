package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"grpcworkshop.example/final/fault"
)

// maxBlock bounds how many slots one reservation asks for.
const maxBlock = 256

// reserveTimeout bounds one reservation, whoever waits for it: it settles
// even when the Store that started it has gone.
const reserveTimeout = 5 * time.Second

// Quota keeps a tenant under max_cache_keys across all replicas: this
// replica reserves slots from Accounts, the authority, for the new keys it
// stores, in blocks sized to demand, and holds them under a lease that it
// renews by reporting its holdings; spare slots go back with the report.
// Overwrites and Gets need no remote call, and no lock is held across one
// except reportMu, which only reports take (they must reach Accounts in
// order).
type Quota struct {
	accounts Authority
	id       string
	store    *Store
	log      *slog.Logger
	// refused is, per tenant, Accounts' last QuotaExceeded to a dry run
	// and until when a dry run gets it again without asking (refusalTTL).
	refused sync.Map // tenant -> refusal

	reportMu sync.Mutex
	// registered is written under reportMu but read without it: a report
	// hung on an unreachable Accounts holds reportMu for up to an interval,
	// and a new key must not wait for it when the lease is registered.
	registered atomic.Bool
	// reports counts successful reports, so the Stores that all learn at
	// once that the lease lapsed re-register it once, not each.
	reports atomic.Int64
}

// flight is one reservation in flight for a tenant; the new keys that need
// a slot meanwhile wait for it instead of sending their own.
type flight struct {
	done  chan struct{}
	seq   int64
	count int64
	err   error // set before done closes
}

// LeaseID makes a lease id unique to this process: replicaID (a name an
// operator reads) and random bytes, so two processes that share a name,
// or a restarted one, never share a lease.
func LeaseID(replicaID string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand does not fail on supported platforms
	return replicaID + "/" + hex.EncodeToString(b)
}

func newQuota(accounts Authority, id string, store *Store, log *slog.Logger) *Quota {
	return &Quota{accounts: accounts, id: id, store: store, log: log}
}

// LeaseID is the lease this replica holds its slots under.
func (q *Quota) LeaseID() string { return q.id }

// storeNew writes key of tenant, reserving slots when no spare one is
// at hand.
func (q *Quota) storeNew(ctx context.Context, tenant string, t *tenantData, key string, val []byte) error {
	renewed := false
	for {
		reports := q.reports.Load()
		ok, f, start := t.put(key, val)
		if ok {
			return nil
		}
		if start {
			q.fly(ctx, tenant, t, f)
		} else {
			select {
			case <-f.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		switch {
		case f.err == nil:
			continue // slots arrived: take one
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(f.err, fault.ErrLeaseNotFound) && !renewed:
			// The lease lapsed (or Accounts lost it): report and retry once.
			renewed = true
			if err := q.reregister(ctx, reports); err != nil {
				return err
			}
		default:
			return f.err
		}
	}
}

// fly sends reservation f and settles it. It runs on the Store that
// started it, but not under its cancellation: once sent, a reservation is
// settled, so a later report tells Accounts the truth.
func (q *Quota) fly(ctx context.Context, tenant string, t *tenantData, f *flight) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reserveTimeout)
	defer cancel()
	if err := q.register(rctx); err != nil {
		t.settle(f, 0, err)
		return
	}
	granted, err := q.accounts.Reserve(rctx, q.id, tenant, f.count, f.seq, false)
	if err != nil {
		granted = 0
	}
	t.settle(f, granted, err)
}

// refusalTTL is how long a dry run of a new key is refused from memory
// after Accounts refused one for the tenant's quota: dry runs from a
// tenant at its quota reach Accounts once a second, not once each. A slot
// freed meanwhile is seen by dry runs at most this late.
const refusalTTL = time.Second

type refusal struct {
	until time.Time
	err   error
}

// check is a dry run of a new key: would a slot be granted? It never
// reserves, and a tenant Accounts just refused is refused from memory.
func (q *Quota) check(ctx context.Context, tenant string) error {
	if r, ok := q.refused.Load(tenant); ok && time.Now().Before(r.(refusal).until) {
		return r.(refusal).err
	}
	err := q.checkRemote(ctx, tenant)
	if errors.Is(err, fault.ErrQuotaExceeded) {
		q.refused.Store(tenant, refusal{until: time.Now().Add(refusalTTL), err: err})
	}
	return err
}

func (q *Quota) checkRemote(ctx context.Context, tenant string) error {
	if err := q.register(ctx); err != nil {
		return err
	}
	reports := q.reports.Load()
	_, err := q.accounts.Reserve(ctx, q.id, tenant, 1, 0, true)
	if errors.Is(err, fault.ErrLeaseNotFound) {
		if err := q.reregister(ctx, reports); err != nil {
			return err
		}
		_, err = q.accounts.Reserve(ctx, q.id, tenant, 1, 0, true)
	}
	return err
}

// register reports holdings unless the lease is registered already.
func (q *Quota) register(ctx context.Context) error {
	if q.registered.Load() {
		return nil
	}
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	if q.registered.Load() {
		return nil
	}
	return q.reportLocked(ctx)
}

// reregister reports holdings after Accounts said it has no lease, unless
// a report succeeded since the caller read reports (`since`).
func (q *Quota) reregister(ctx context.Context, since int64) error {
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	if q.reports.Load() != since {
		return nil
	}
	return q.reportLocked(ctx)
}

// Report sends this replica's holdings to Accounts, renewing its lease and
// returning spare slots, and drops whatever Accounts no longer admits.
func (q *Quota) Report(ctx context.Context) error {
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	return q.reportLocked(ctx)
}

func (q *Quota) reportLocked(ctx context.Context) error {
	holdings, resolved := q.store.report()
	admitted, err := q.accounts.Lease(ctx, q.id, holdings, resolved)
	if err != nil {
		return err
	}
	q.registered.Store(true)
	q.reports.Add(1)
	if n := q.store.trim(holdings, admitted); n > 0 {
		q.log.Warn("lease had lapsed: dropped keys other replicas took the slots of", "dropped", n)
	}
	return nil
}

// release gives the lease's slots back, if it holds any; a Store after it
// registers again.
func (q *Quota) release(ctx context.Context) error {
	q.reportMu.Lock()
	defer q.reportMu.Unlock()
	if !q.registered.Load() {
		return nil
	}
	q.registered.Store(false)
	return q.accounts.Release(ctx, q.id)
}

// run reports holdings every interval until ctx ends.
func (q *Quota) run(ctx context.Context, interval time.Duration) {
	q.log.Info("quota slots held under lease", "lease", q.id)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		if err := q.Report(rctx); err != nil {
			q.log.Warn("report holdings to accounts", "error", err)
		}
		cancel()
	}
}
