package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/step04-multitenant/rpc"
)

func store(ctx context.Context, cache rpc.CacheClient, token, key, val string) error {
	_, err := cache.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte(val), AccountToken: token})
	return err
}

func get(ctx context.Context, cache rpc.CacheClient, token, key string) (string, error) {
	resp, err := cache.Get(ctx, &rpc.GetReq{Key: key, AccountToken: token})
	return string(resp.GetVal()), err
}

func TestStoreOverQuotaIsFailedPreconditionNamingTheLimit(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	for i := range 3 {
		require.NoError(t, store(ctx, cache, "small", fmt.Sprint("k", i), "v"))
	}
	err := store(ctx, cache, "small", "one-too-many", "v")
	st := status.Convert(err)
	assert.Equal(t, codes.FailedPrecondition, st.Code())
	assert.Contains(t, st.Message(), "max key limit 3")
}

func TestOverwriteAtQuotaSucceeds(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	for i := range 3 {
		require.NoError(t, store(ctx, cache, "small", fmt.Sprint("k", i), "old"))
	}
	require.NoError(t, store(ctx, cache, "small", "k1", "new"), "overwriting an existing key at the limit")
	got, err := get(ctx, cache, "small", "k1")
	require.NoError(t, err)
	assert.Equal(t, "new", got)
}

func TestQuotaCountsKeysNotWrites(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	for range 10 {
		require.NoError(t, store(ctx, sys.cache, "small", "same-key", "v"))
	}
	// Ten writes of one key took one slot of three: two more keys fit.
	require.NoError(t, store(ctx, sys.cache, "small", "second", "v"))
	require.NoError(t, store(ctx, sys.cache, "small", "third", "v"))
	assert.Equal(t, codes.FailedPrecondition, status.Code(store(ctx, sys.cache, "small", "fourth", "v")))
}

func TestTenantsAreIsolated(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	require.NoError(t, store(ctx, cache, testToken, "shared-name", "mine"))

	_, err := get(ctx, cache, "other", "shared-name")
	assert.Equal(t, codes.NotFound, status.Code(err), "another tenant must not read my key")

	require.NoError(t, store(ctx, cache, "other", "shared-name", "theirs"))
	mine, err := get(ctx, cache, testToken, "shared-name")
	require.NoError(t, err)
	assert.Equal(t, "mine", mine, "another tenant must not overwrite my key")
	theirs, err := get(ctx, cache, "other", "shared-name")
	require.NoError(t, err)
	assert.Equal(t, "theirs", theirs)
}

func TestUnknownOrMissingTokenIsUnauthenticated(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	for _, token := range []string{"no-such-token", ""} {
		err := store(ctx, sys.cache, token, "k", "v")
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "Store with token %q: %v", token, err)
		_, err = get(ctx, sys.cache, token, "k")
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "Get with token %q: %v", token, err)
	}
}

func TestAccountsUnreachableIsUnavailable(t *testing.T) {
	certs := devCerts(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens here any more

	sys := startCacheWith(t, certs, testServerConfig(t, certs, deadAddr))
	ctx := testContext(t)

	err = store(ctx, sys.cache, testToken, "k", "v")
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
	_, err = get(ctx, sys.cache, testToken, "k")
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
}

func TestConcurrentStoresRacingForTheLastSlots(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	const racers = 40
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			err := store(ctx, sys.cache, "small", fmt.Sprint("racer-", i), "v")
			switch status.Code(err) {
			case codes.OK:
				ok.Add(1)
			case codes.FailedPrecondition:
				refused.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	assert.EqualValues(t, 3, ok.Load())
	assert.EqualValues(t, racers-3, refused.Load())
}

func TestCacheServerRefusesAnAccountsServiceItCannotVerify(t *testing.T) {
	certs, otherCA := devCerts(t), devCerts(t)
	// Accounts presents a certificate from a CA the cache server does not trust.
	accountsAddr := startAccounts(t, testAccountsConfig(t, otherCA, testAccounts))
	sys := startCacheWith(t, certs, testServerConfig(t, certs, accountsAddr))

	err := store(testContext(t), sys.cache, testToken, "k", "v")
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")
}
