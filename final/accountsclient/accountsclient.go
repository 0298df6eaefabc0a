// Package accountsclient is the one adapter for everything a cache replica
// asks of the Accounts service: a token's account, a slot for a new key,
// the lease on its slots. It speaks gRPC on one side and domain types and
// fault errors on the other (apierr.FromAccounts, by ErrorInfo reason), so
// the cache's domain never sees a status code.
package accountsclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/rpc"
)

// Client calls Accounts over a connection. It implements cache.Authority.
type Client struct {
	rpc rpc.AccountsClient
	// Timeout bounds the calls made on a caller's behalf (Account,
	// Reserve), whatever the caller's deadline, so a hung Accounts fails
	// them fast; 0: no bound. RetryAfter is the retry delay then reported.
	Timeout, RetryAfter time.Duration
}

// New returns a client over cc.
func New(cc grpc.ClientConnInterface) *Client {
	return &Client{rpc: rpc.NewAccountsClient(cc)}
}

// bounded runs call under Timeout. When Timeout (not the caller's own
// deadline) cut the call short, the error says Accounts is unavailable,
// with a retry delay: the caller may retry, unlike after its own deadline.
func (c *Client) bounded(ctx context.Context, call func(ctx context.Context) error) error {
	if c.Timeout <= 0 {
		return apierr.FromAccounts(call(ctx))
	}
	cctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	err := call(cctx)
	if err != nil && cctx.Err() != nil && ctx.Err() == nil {
		return &fault.Error{
			Reason: fault.AccountsUnavailable, RetryAfter: c.RetryAfter,
			Msg: fmt.Sprintf("accounts service did not answer within %v", c.Timeout), Err: err,
		}
	}
	return apierr.FromAccounts(err)
}

// Account returns the account of token.
func (c *Client) Account(ctx context.Context, token string) (accounts.Account, error) {
	var resp *rpc.GetByTokenResp
	err := c.bounded(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.GetByToken(ctx, &rpc.GetByTokenReq{Token: token})
		return err
	})
	if err != nil {
		return accounts.Account{}, err
	}
	a := resp.GetAccount()
	return accounts.Account{Tenant: a.GetTenant(), MaxCacheKeys: a.GetMaxCacheKeys(), MaxCacheBytes: a.GetMaxCacheBytes()}, nil
}

// Reserve asks for up to count slots for new keys of tenant (at least
// least), or bytes of its byte budget (fault.BytesOf), under the lease and
// returns how many it got.
func (c *Client) Reserve(ctx context.Context, leaseID, tenant string, count, least, seq int64, dryRun bool) (int64, error) {
	var resp *rpc.ReserveResp
	err := c.bounded(ctx, func(ctx context.Context) (err error) {
		resp, err = c.rpc.Reserve(ctx, &rpc.ReserveReq{LeaseId: leaseID, Tenant: tenant, Count: count, Least: least, Seq: seq, DryRun: dryRun})
		return err
	})
	if err != nil {
		return 0, err
	}
	if resp.GetGranted() == 0 && !dryRun && least <= 1 {
		return 1, nil // an Accounts from before blocks grants one slot and says nothing
	}
	if resp.GetGranted() < least && !dryRun {
		// An Accounts from before byte budgets ignores least.
		return 0, &fault.Error{Reason: fault.Internal, Err: fmt.Errorf("accounts granted %d of tenant %q, fewer than the %d asked at least: upgrade Accounts before the replicas", resp.GetGranted(), tenant, least)}
	}
	return resp.GetGranted(), nil
}

// Lease reports the replica's holdings and renews its lease; it returns
// what the replica keeps and the lease's TTL.
func (c *Client) Lease(ctx context.Context, leaseID string, holdings, resolved map[string]int64, report int64) (map[string]int64, time.Duration, error) {
	resp, err := c.rpc.Lease(ctx, &rpc.LeaseReq{LeaseId: leaseID, Holdings: holdings, Resolved: resolved, Report: report})
	if err != nil {
		return nil, 0, apierr.FromAccounts(err)
	}
	return resp.GetAdmitted(), time.Duration(resp.GetTtlMillis()) * time.Millisecond, nil
}

// Release gives the lease's slots back at once.
func (c *Client) Release(ctx context.Context, leaseID string) error {
	_, err := c.rpc.Release(ctx, &rpc.ReleaseReq{LeaseId: leaseID})
	return apierr.FromAccounts(err)
}
