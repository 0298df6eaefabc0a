package accounts

import "context"

// Local is s in process, with the methods the cache asks of Accounts (it
// satisfies cache.Authority): for tests, benchmarks and single-binary
// deployments. Over the network, final/accountsclient does the same.
type Local struct{ *Service }

func (l Local) Account(_ context.Context, token string) (Account, error) {
	return l.Service.Account(token)
}

func (l Local) Reserve(_ context.Context, leaseID, tenant string, dryRun bool) error {
	return l.Service.Reserve(leaseID, tenant, dryRun)
}

func (l Local) Lease(_ context.Context, leaseID string, holdings map[string]int64) (map[string]int64, error) {
	return l.Service.Lease(leaseID, holdings)
}

func (l Local) Release(_ context.Context, leaseID string) error { return l.Service.Release(leaseID) }
