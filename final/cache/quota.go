package cache

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/rpc"
)

// Quota keeps a tenant under max_cache_keys across all replicas: this
// replica reserves a slot from Accounts, the authority, for every new key
// it stores, and holds its slots under a lease that it renews by reporting
// its holdings. Overwrites and Gets need no remote call.
type Quota struct {
	accounts rpc.AccountsClient
	id       string
	store    *Store
	log      *slog.Logger

	// Reservations in flight hold mu shared until their key is written;
	// reporting holdings holds it exclusively, so the report never misses a
	// slot that Accounts granted.
	mu         sync.RWMutex
	registered bool // guarded by mu
}

func newQuota(accounts rpc.AccountsClient, id string, store *Store, log *slog.Logger) *Quota {
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
		_, err := q.accounts.Reserve(ctx, &rpc.ReserveReq{LeaseId: q.id, Tenant: tenant, DryRun: dry})
		if err == nil {
			return q.mu.RUnlock, nil
		}
		q.mu.RUnlock()
		if !apierr.IsLeaseNotFound(err) || attempt > 0 {
			return nil, apierr.FromAccounts(err)
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
	resp, err := q.accounts.Lease(ctx, &rpc.LeaseReq{LeaseId: q.id, Holdings: q.store.holdings()})
	if err != nil {
		return apierr.FromAccounts(err)
	}
	q.registered = true
	if n := q.store.trim(resp.Admitted); n > 0 {
		q.log.Warn("lease had lapsed: dropped keys other replicas took the slots of", "dropped", n)
	}
	return nil
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
