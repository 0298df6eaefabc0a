package accounts

import (
	"context"
	"time"
)

// Local is s in process, with the methods the cache asks of Accounts (it
// satisfies cache.Authority): for tests, benchmarks and single-binary
// deployments. Over the network, final/accountsclient does the same; there
// Owner is the identity in the replica's client certificate.
type Local struct {
	*Service
	Owner string
}

func (l Local) Account(_ context.Context, token string) (Account, error) {
	return l.Service.Account(token)
}

func (l Local) Reserve(ctx context.Context, leaseID, tenant string, count, least, seq int64, dryRun bool) (int64, error) {
	return l.Service.Reserve(ctx, l.Owner, leaseID, tenant, count, least, seq, dryRun)
}

func (l Local) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	admitted, err := l.Service.Lease(ctx, l.Owner, leaseID, holdings, resolved, report)
	if err != nil {
		return nil, 0, err
	}
	return admitted, l.Service.Ledger().TTL(), nil
}

func (l Local) Release(ctx context.Context, leaseID string) error {
	return l.Service.Release(ctx, l.Owner, leaseID)
}
