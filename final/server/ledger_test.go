package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// Issue 15's target: new keys in blocks, and still exactly the quota.
func TestNewKeysAcrossThreeReplicasEndAtExactlyTheQuota(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3, tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.Rate, c.Limits.TenantRate = 0, 0 }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // 4,500 calls under -race on a busy machine
	defer cancel()
	const quota, workers, perWorker = 1000, 3, 400 // 1,200 attempts per replica
	var ok atomic.Int64
	var wg sync.WaitGroup
	for r, addr := range st.CacheAddrs {
		c := rpc.NewCacheClient(dialTarget(t, st, addr, tok, client.Options{}))
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					err := store(ctx, c, fmt.Sprintf("r%d-w%d-%d", r, w, i), "v")
					switch status.Code(err) {
					case codes.OK:
						ok.Add(1)
					case codes.FailedPrecondition:
					default:
						t.Errorf("store: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	total := 0
	for _, c := range st.Caches {
		total += c.Service().Data().Len(tok)
		assert.Zero(t, c.Service().Data().Spare(tok), "every reserved slot was used")
	}
	assert.EqualValues(t, quota, ok.Load(), "acknowledged Stores")
	assert.Equal(t, quota, total, "keys across all replicas")
	assert.EqualValues(t, quota, st.Accounts.Service().Ledger().Held(tok))
}

// Issue 10 item 7: a lease is bound to the identity in the caller's
// certificate. Issue 24, item 4: and only that identity's lease ids are
// accepted, only replicas may call, and a lease never holds more than the
// quota.
func TestAReplicasCertificateCannotTouchAnotherReplicasLease(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 2})
	// Every key on replica 1: marked as forwarded, no call goes on to
	// its key's owner.
	ctx := metadata.AppendToOutgoingContext(testContext(t), forward.Header, "test")
	victim := st.Caches[0].Service()
	c := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], "small", client.Options{}))
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, store(ctx, c, k, "v"))
	}
	ledger := st.Accounts.Service().Ledger()
	require.EqualValues(t, 3, ledger.Held("small"))

	// Replica 2's certificate, and replica 1's lease id (say it leaked from a log).
	tlsCfg, err := tlsutil.Dir(filepath.Dir(st.CA)).Replica(2)
	require.NoError(t, err)
	cc, err := grpc.NewClient(st.AccountsAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	acc := rpc.NewAccountsClient(cc)
	id := victim.Quota().LeaseID()
	require.True(t, strings.HasPrefix(id, "cache-1/"), "a lease id begins with the replica's certificate name: %s", id)
	// Issue 24, item 4: a lease id not of the caller's identity is
	// refused outright.
	_, err = acc.Lease(ctx, &rpc.LeaseReq{LeaseId: id, Holdings: map[string]int64{"small": 1 << 40}})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = acc.Reserve(ctx, &rpc.ReserveReq{LeaseId: id, Tenant: "small", Count: 1, Seq: 1})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = acc.Release(ctx, &rpc.ReleaseReq{LeaseId: id})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.EqualValues(t, 3, ledger.Held("small"), "replica 1's slots are untouched")

	// Its own lease: never more than the quota leaves.
	admitted, err := acc.Lease(ctx, &rpc.LeaseReq{LeaseId: "cache-2/x", Holdings: map[string]int64{"small": 1 << 40, "made-up": 5}})
	require.NoError(t, err)
	assert.Zero(t, admitted.GetAdmitted()["small"], "the quota is full")
	assert.Zero(t, admitted.GetAdmitted()["made-up"])
	_, err = acc.Release(ctx, &rpc.ReleaseReq{LeaseId: "cache-2/x"})
	require.NoError(t, err)

	// A certificate the CA signed for something else is no replica: no
	// lease, no token lookups.
	other, err := tlsutil.Dir(filepath.Dir(st.CA)).Other()
	require.NoError(t, err)
	oc, err := grpc.NewClient(st.AccountsAddr, grpc.WithTransportCredentials(credentials.NewTLS(other)))
	require.NoError(t, err)
	t.Cleanup(func() { oc.Close() })
	_, err = rpc.NewAccountsClient(oc).GetByToken(ctx, &rpc.GetByTokenReq{Token: tok})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = rpc.NewAccountsClient(oc).Lease(ctx, &rpc.LeaseReq{LeaseId: "other/x"})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = acc.GetByToken(ctx, &rpc.GetByTokenReq{Token: tok})
	assert.NoError(t, err, "a replica looks tokens up")

	// Replica 1 renews its lease as usual and keeps every key.
	require.NoError(t, victim.Quota().Report(ctx))
	assert.Equal(t, 3, victim.Data().Len("small"))
	assert.EqualValues(t, 3, ledger.Held("small"))
}

// An Accounts that starts without its ledger on disk grants no slot during
// its recovery grace; the replica passes that on as Unavailable with the
// reason and a RetryInfo, so clients retry later rather than give up.
func TestNewKeysDuringTheRecoveryGraceAreUnavailableWithRetryInfo(t *testing.T) {
	st := startStack(t, stackOpts{tuneAccounts: func(c *server.AccountsConfig) { c.RecoveryGrace = time.Hour }})
	ctx := testContext(t)
	c := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, client.Options{Retry: retryOnce}))
	err := store(ctx, c, "new", "v")
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Equal(t, fault.LedgerRecovering, apierr.ReasonOf(err))
	delay, ok := apierr.RetryDelay(err)
	require.True(t, ok, "RetryInfo")
	assert.Greater(t, delay, 59*time.Minute)
	assert.Zero(t, st.Caches[0].Service().Data().Len(tok))
}
