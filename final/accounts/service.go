// Package accounts is the Accounts domain: it resolves tokens to accounts
// and is the single authority on how many keys each tenant holds across
// all cache replicas (the Ledger). It knows nothing of gRPC; final/server
// serves it.
package accounts

import (
	"context"
	"net/url"
	"strings"
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

// maxOf is the limit of a name the ledger counts: a tenant's keys, or
// its bytes (fault.BytesOf).
func (s *Service) maxOf(name string) int64 { return s.dir.Load().max(name) }

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

// Reserve grants up to count slots (at least least, and at least one)
// for new keys of tenant under the lease (owner, leaseID), or, for the
// name fault.BytesOf(tenant), bytes of its byte budget; owner is the
// identity in the caller's client certificate. A dry run only checks that
// least are free.
func (s *Service) Reserve(ctx context.Context, owner, leaseID, tenant string, count, least, seq int64, dryRun bool) (granted int64, err error) {
	switch {
	case leaseID == "":
		return 0, fault.BadField("lease_id", "lease_id is required")
	case tenant == "":
		return 0, fault.BadField("tenant", "tenant is required")
	case count < 0:
		return 0, fault.BadField("count", "count must not be negative")
	case least < 0:
		return 0, fault.BadField("least", "least must not be negative")
	case seq < 0:
		return 0, fault.BadField("seq", "seq must not be negative")
	}
	if err := mayUse(owner, leaseID); err != nil {
		return 0, err
	}
	return s.ledger.Reserve(ctx, owner, leaseID, tenant, s.maxOf(tenant), max(count, least, 1), max(least, 1), seq, dryRun)
}

// Lease (re)registers a replica's holdings under (owner, leaseID),
// renewing its lease, and returns what it keeps. report numbers the
// replica's reports (0: not numbered): one that arrives after a newer one
// is refused.
func (s *Service) Lease(ctx context.Context, owner, leaseID string, holdings, resolved map[string]int64, report int64) (admitted map[string]int64, err error) {
	if leaseID == "" {
		return nil, fault.BadField("lease_id", "lease_id is required")
	}
	for t, n := range holdings {
		if n < 0 || t == "" {
			return nil, fault.BadField("holdings", "holdings must name tenants and not be negative")
		}
	}
	if report < 0 {
		return nil, fault.BadField("report", "report must not be negative")
	}
	if err := mayUse(owner, leaseID); err != nil {
		return nil, err
	}
	return s.ledger.Register(ctx, owner, leaseID, holdings, resolved, report, s.maxOf)
}

// Release gives a replica's slots back at once (it is shutting down).
func (s *Service) Release(ctx context.Context, owner, leaseID string) error {
	if leaseID == "" {
		return fault.BadField("lease_id", "lease_id is required")
	}
	if err := mayUse(owner, leaseID); err != nil {
		return err
	}
	return s.ledger.Release(ctx, owner, leaseID)
}

// ReplicaIDPrefix is the path of a replica's identity in its certificate's
// URI SAN: spiffe://TRUST-DOMAIN/replica/NAME, NAME being the replica's
// id (-id, the pod's name), which begins every lease id it uses.
const ReplicaIDPrefix = "/replica/"

// ReplicaURI is the identity a replica's certificate names (a URI SAN).
func ReplicaURI(trustDomain, name string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: ReplicaIDPrefix + name}
}

// ReplicaName is the replica an identity names (a URI
// spiffe://TRUST-DOMAIN/replica/NAME), or false.
func ReplicaName(identity string) (string, bool) {
	u, err := url.Parse(identity)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" {
		return "", false
	}
	name, ok := strings.CutPrefix(u.Path, ReplicaIDPrefix)
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

// mayUse checks that owner, a caller's identity, may use the lease
// leaseID: the identity names a replica, and the lease id is that
// replica's (NAME/…, cache.LeaseID). The empty identity (a plaintext
// connection: tests, a mesh that checks identities itself) is not checked.
func mayUse(owner, leaseID string) error {
	if owner == "" {
		return nil
	}
	name, ok := ReplicaName(owner)
	if !ok {
		return fault.Forbidden("%s is not a replica's identity (spiffe://…%sNAME)", owner, ReplicaIDPrefix)
	}
	if !strings.HasPrefix(leaseID, name+"/") {
		return fault.Forbidden("lease %q is not replica %s's (its lease ids begin %q)", leaseID, name, name+"/")
	}
	return nil
}
