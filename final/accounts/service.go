// Package accounts is the Accounts domain: it resolves tokens to accounts
// and is the single authority on how many keys each tenant holds across
// all cache replicas (the Ledger). It knows nothing of gRPC; final/server
// serves it.
package accounts

import (
	"sync/atomic"
	"time"

	"grpcworkshop/final/fault"
)

// Service is the Accounts service's logic.
type Service struct {
	dir    atomic.Pointer[Directory]
	ledger *Ledger
}

// NewService serves dir, with replica leases lasting leaseTTL.
func NewService(dir *Directory, leaseTTL time.Duration) *Service {
	s := &Service{ledger: NewLedger(leaseTTL)}
	s.dir.Store(dir)
	return s
}

// SetDirectory replaces the accounts, e.g. to revoke a token or change a
// quota. Replicas notice within their account cache's TTL; quotas are
// enforced here, at once, for new keys.
func (s *Service) SetDirectory(dir *Directory) { s.dir.Store(dir) }

// Ledger exposes the key ledger (for tests and operators).
func (s *Service) Ledger() *Ledger { return s.ledger }

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

// Reserve takes a slot for one new key of tenant under lease leaseID; a
// dry run only checks.
func (s *Service) Reserve(leaseID, tenant string, dryRun bool) error {
	switch {
	case leaseID == "":
		return fault.BadField("lease_id", "lease_id is required")
	case tenant == "":
		return fault.BadField("tenant", "tenant is required")
	}
	return s.ledger.Reserve(leaseID, tenant, s.maxOf(tenant), dryRun)
}

// Lease (re)registers a replica's holdings, renewing its lease, and
// returns what it keeps.
func (s *Service) Lease(leaseID string, holdings map[string]int64) (admitted map[string]int64, err error) {
	if leaseID == "" {
		return nil, fault.BadField("lease_id", "lease_id is required")
	}
	return s.ledger.Register(leaseID, holdings, s.maxOf), nil
}

// Release gives a replica's slots back at once (it is shutting down).
func (s *Service) Release(leaseID string) error {
	if leaseID == "" {
		return fault.BadField("lease_id", "lease_id is required")
	}
	s.ledger.Release(leaseID)
	return nil
}
