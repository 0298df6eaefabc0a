package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"grpcworkshop/final/fault"
)

// Quota keeps a tenant under max_cache_keys across all replicas: this
// replica reserves a slot from Accounts, the authority, for every new key
// it stores, and holds its slots under a lease that it renews by reporting
// its holdings. Overwrites and Gets need no remote call.
type Quota struct {
	accounts Authority
	id       string
	store    *Store
	log      *slog.Logger

	// Reservations in flight hold mu shared until their key is written;
	// reporting holdings holds it exclusively, so the report never misses a
	// slot that Accounts granted.
	mu         sync.RWMutex
	registered bool // guarded by mu
}

func newQuota(accounts Authority, id string, store *Store, log *slog.Logger) *Quota {
	return &Quota{accounts: accounts, id: id, store: store, log: log}
}

// acquire reserves a slot for a new key of tenant; on success the caller
// writes the key and then calls release. A dry run only checks.
func (q *Quota) acquire(ctx context.Context, tenant string, dry bool) (release func(), err error) {
	for attempt := 0; ; attempt++ {
		q.mu.RLock()
		if !q.registered {
			q.mu.RUnlock()
			if err := q.Report(ctx); err != nil {
				return nil, err
			}
			q.mu.RLock()
		}
		err := q.accounts.Reserve(ctx, q.id, tenant, dry)
		if err == nil {
			return q.mu.RUnlock, nil
		}
		q.mu.RUnlock()
		if !errors.Is(err, fault.ErrLeaseNotFound) || attempt > 0 {
			return nil, err
		}
		// The lease lapsed (or Accounts restarted): report holdings and retry once.
		q.mu.Lock()
		q.registered = false
		q.mu.Unlock()
	}
}

// Report sends this replica's holdings to Accounts, renewing its lease, and
// drops whatever Accounts no longer admits.
func (q *Quota) Report(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	admitted, err := q.accounts.Lease(ctx, q.id, q.store.holdings())
	if err != nil {
		return err
	}
	q.registered = true
	if n := q.store.trim(admitted); n > 0 {
		q.log.Warn("lease had lapsed: dropped keys other replicas took the slots of", "dropped", n)
	}
	return nil
}

// release gives the lease's slots back, if it holds any; a Store after it
// registers again.
func (q *Quota) release(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.registered {
		return nil
	}
	q.registered = false
	return q.accounts.Release(ctx, q.id)
}

// run reports holdings every interval until ctx ends.
func (q *Quota) run(ctx context.Context, interval time.Duration) {
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
