// Package accountsclient is the one adapter for everything a cache replica
// asks of the Accounts service: a token's account, a slot for a new key,
// the lease on its slots. It speaks gRPC on one side and domain types and
// fault errors on the other (apierr.FromAccounts, by ErrorInfo reason), so
// the cache's domain never sees a status code.
package accountsclient

import (
	"context"

	"google.golang.org/grpc"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/apierr"
	"grpcworkshop/final/rpc"
)

// Client calls Accounts over a connection. It implements cache.Authority.
type Client struct {
	rpc rpc.AccountsClient
}

// New returns a client over cc.
func New(cc grpc.ClientConnInterface) *Client {
	return &Client{rpc: rpc.NewAccountsClient(cc)}
}

// Account returns the account of token.
func (c *Client) Account(ctx context.Context, token string) (accounts.Account, error) {
	resp, err := c.rpc.GetByToken(ctx, &rpc.GetByTokenReq{Token: token})
	if err != nil {
		return accounts.Account{}, apierr.FromAccounts(err)
	}
	a := resp.GetAccount()
	return accounts.Account{Tenant: a.GetTenant(), MaxCacheKeys: a.GetMaxCacheKeys()}, nil
}

// Reserve takes a slot for one new key of tenant under the lease.
func (c *Client) Reserve(ctx context.Context, leaseID, tenant string, dryRun bool) error {
	_, err := c.rpc.Reserve(ctx, &rpc.ReserveReq{LeaseId: leaseID, Tenant: tenant, DryRun: dryRun})
	return apierr.FromAccounts(err)
}

// Lease reports the replica's holdings and renews its lease.
func (c *Client) Lease(ctx context.Context, leaseID string, holdings map[string]int64) (map[string]int64, error) {
	resp, err := c.rpc.Lease(ctx, &rpc.LeaseReq{LeaseId: leaseID, Holdings: holdings})
	if err != nil {
		return nil, apierr.FromAccounts(err)
	}
	return resp.GetAdmitted(), nil
}

// Release gives the lease's slots back at once.
func (c *Client) Release(ctx context.Context, leaseID string) error {
	_, err := c.rpc.Release(ctx, &rpc.ReleaseReq{LeaseId: leaseID})
	return apierr.FromAccounts(err)
}
