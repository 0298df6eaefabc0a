// Package accounts is the Accounts service: it resolves tokens to accounts
// and is the single authority on how many keys each tenant holds across
// all cache replicas (the Ledger).
package accounts

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/rpc"
)

// Service implements rpc.AccountsServer.
type Service struct {
	rpc.UnimplementedAccountsServer

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

func (s *Service) GetByToken(ctx context.Context, req *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	if req.Token == "" {
		return nil, apierr.InvalidArgument("token", "token must not be empty")
	}
	acct, ok := s.dir.Load().byToken[req.Token]
	if !ok {
		return nil, apierr.UnknownToken() // the cache maps this to Unauthenticated
	}
	return &rpc.GetByTokenResp{Account: acct}, nil
}

func (s *Service) Reserve(ctx context.Context, req *rpc.ReserveReq) (*rpc.ReserveResp, error) {
	if req.LeaseId == "" || req.Tenant == "" {
		return nil, apierr.InvalidArgument("lease_id", "lease_id and tenant are required")
	}
	max := s.maxOf(req.Tenant)
	switch err := s.ledger.Reserve(req.LeaseId, req.Tenant, max, req.DryRun); {
	case errors.Is(err, errNoLease):
		return nil, apierr.LeaseNotFound(req.LeaseId)
	case errors.Is(err, errQuotaFull):
		return nil, apierr.QuotaExceeded(req.Tenant, max)
	}
	return &rpc.ReserveResp{}, nil
}

func (s *Service) Lease(ctx context.Context, req *rpc.LeaseReq) (*rpc.LeaseResp, error) {
	if req.LeaseId == "" {
		return nil, apierr.InvalidArgument("lease_id", "lease_id is required")
	}
	return &rpc.LeaseResp{
		Admitted:  s.ledger.Register(req.LeaseId, req.Holdings, s.maxOf),
		TtlMillis: s.ledger.ttl.Milliseconds(),
	}, nil
}
