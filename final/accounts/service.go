// Package accounts is the Accounts domain: it resolves tokens to accounts
// and is the single authority on how many keys each tenant holds across
// all cache replicas (the Ledger). It knows nothing of gRPC; final/server
// serves it.
package accounts

import (
	"context"
	"sync/atomic"
	"time"

	"grpcworkshop.example/final/fault"
)

// Service is the Accounts service's logic.
type Service struct {
	dir    atomic.Pointer[Directory]
	ledger LedgerEngine
}

// NewService serves dir, with replica leases lasting leaseTTL, in memory.
func NewService(dir *Directory, leaseTTL time.Duration) *Service {
	return NewServiceWith(dir, NewLedger(leaseTTL))
}

// NewServiceWith serves dir with ledger (OpenLedger: durable, or with a
// recovery grace; OpenEtcdLedger: shared by several Accounts).
func NewServiceWith(dir *Directory, ledger LedgerEngine) *Service {
	s := &Service{ledger: ledger}
	s.dir.Store(dir)
	return s
}

// SetDirectory replaces the accounts, e.g. to revoke a token or change a
// quota. Replicas notice within their account cache's TTL; quotas are
// enforced here, at once, for new keys.
func (s *Service) SetDirectory(dir *Directory) { s.dir.Store(dir) }

// Ledger exposes the key ledger (for tests and operators).
func (s *Service) Ledger() LedgerEngine { return s.ledger }

func (s *Service) maxOf(tenant string) int64 { return s.dir.Load().maxByTenant[tenant] }

// Account returns the account of token.
func (s *Service) Account(token string) (Account, error) {
	if token == "" {
		return Account{}, fault.BadField("token", "token must not be empty")
	}
	acct, ok := s.dir.Load().byToken[token]
	if !ok {
		return Account{}, fault.NoAccount()
	}
	return acct, nil
}

// Reserve grants up to count slots (at least one) for new keys of tenant
// under the lease (owner, leaseID); owner is the identity in the caller's
// client certificate. A dry run only checks that one is free.
func (s *Service) Reserve(ctx context.Context, owner, leaseID, tenant string, count, seq int64, dryRun bool) (granted int64, err error) {
	switch {
	case leaseID == "":
		return 0, fault.BadField("lease_id", "lease_id is required")
	case tenant == "":
		return 0, fault.BadField("tenant", "tenant is required")
	case count < 0:
		return 0, fault.BadField("count", "count must not be negative")
	case seq < 0:
		return 0, fault.BadField("seq", "seq must not be negative")
	}
	return s.ledger.Reserve(ctx, owner, leaseID, tenant, s.maxOf(tenant), count, seq, dryRun)
}

// Lease (re)registers a replica's holdings under (owner, leaseID),
// renewing its lease, and returns what it keeps.
func (s *Service) Lease(ctx context.Context, owner, leaseID string, holdings, resolved map[string]int64) (admitted map[string]int64, err error) {
	if leaseID == "" {
		return nil, fault.BadField("lease_id", "lease_id is required")
	}
	for t, n := range holdings {
		if n < 0 || t == "" {
			return nil, fault.BadField("holdings", "holdings must name tenants and not be negative")
		}
	}
	return s.ledger.Register(ctx, owner, leaseID, holdings, resolved, s.maxOf)
}

// Release gives a replica's slots back at once (it is shutting down).
func (s *Service) Release(ctx context.Context, owner, leaseID string) error {
	if leaseID == "" {
		return fault.BadField("lease_id", "lease_id is required")
	}
	return s.ledger.Release(ctx, owner, leaseID)
}
