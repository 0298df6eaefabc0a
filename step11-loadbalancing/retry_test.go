package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// flakyCache fails its first failures attempts with Unavailable, or every
// attempt when failures is negative, and counts them all.
type flakyCache struct {
	rpc.UnimplementedCacheServer
	failures int64
	attempts atomic.Int64
}

func (f *flakyCache) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	if n := f.attempts.Add(1); f.failures < 0 || n <= f.failures {
		return nil, status.Errorf(codes.Unavailable, "attempt %d fails on purpose", n)
	}
	return &rpc.StoreResp{}, nil
}

// startFlaky serves a flakyCache on TLS and returns a client that retries
// with retry.
func startFlaky(t *testing.T, failures int64, retry grpc.UnaryClientInterceptor) (*flakyCache, rpc.CacheClient) {
	t.Helper()
	certs := devCerts(t)
	flaky := &flakyCache{failures: failures}
	srv := grpc.NewServer(grpc.Creds(serverTLS(t, certs)))
	rpc.RegisterCacheServer(srv, flaky)
	conn := dial(t, serveOnLoopback(t, srv), clientTLS(t, certs), grpc.WithChainUnaryInterceptor(retry))
	return flaky, rpc.NewCacheClient(conn)
}

// forever is a backoff no test deadline can fit.
const forever = 100 * 365 * 24 * time.Hour

func TestIdempotentCallSucceedsAfterFailures(t *testing.T) {
	flaky, cache := startFlaky(t, 2, retryUnary(3, time.Millisecond, 10*time.Millisecond))

	require.NoError(t, store(testContext(t), cache, testToken, "k", "v"))
	assert.EqualValues(t, 3, flaky.attempts.Load())
}

func TestRetriesStopAfterMaxAttempts(t *testing.T) {
	flaky, cache := startFlaky(t, -1, retryUnary(3, time.Millisecond, 10*time.Millisecond))

	err := store(testContext(t), cache, testToken, "k", "v")
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, err.Error(), "attempt 3 fails", "the last attempt's error")
	assert.EqualValues(t, 3, flaky.attempts.Load())
}

func TestNotIdempotentCallIsAttemptedOnce(t *testing.T) {
	flaky, cache := startFlaky(t, 2, retryUnary(3, time.Millisecond, 10*time.Millisecond))

	err := store(NotIdempotent(testContext(t)), cache, testToken, "k", "v")
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.EqualValues(t, 1, flaky.attempts.Load())
}

func TestRetriesStopAtTheDeadline(t *testing.T) {
	const maxAttempts = 1 << 30
	flaky, cache := startFlaky(t, -1, retryUnary(maxAttempts, time.Millisecond, 5*time.Millisecond))
	// Connect first, so that the deadline is spent on attempts.
	require.Error(t, store(NotIdempotent(testContext(t)), cache, testToken, "warm-up", "v"))
	flaky.attempts.Store(0)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := store(ctx, cache, testToken, "k", "v")
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "got %v", err)
	assert.Greater(t, flaky.attempts.Load(), int64(1), "it retried")
	assert.Less(t, flaky.attempts.Load(), int64(maxAttempts), "the deadline, not the attempts, stopped it")
}

func TestRetryDoesNotWaitPastTheDeadline(t *testing.T) {
	flaky, cache := startFlaky(t, -1, retryUnary(3, forever, forever))

	err := store(testContext(t), cache, testToken, "k", "v")
	st := status.Convert(err)
	assert.Equal(t, codes.DeadlineExceeded, st.Code())
	assert.Contains(t, st.Message(), "timeout reached before next retry attempt")
	assert.Contains(t, st.Message(), "attempt 1 fails", "the error that would have been retried")
	assert.EqualValues(t, 1, flaky.attempts.Load())
}

func TestRetryWithoutADeadlineWaitsOutTheBackoff(t *testing.T) {
	flaky, cache := startFlaky(t, 1, retryUnary(2, time.Millisecond, time.Millisecond))

	require.NoError(t, store(noDeadlineContext(t), cache, testToken, "k", "v"))
	assert.EqualValues(t, 2, flaky.attempts.Load())
}

// flakyAccounts fails its first failures calls with Unavailable.
type flakyAccounts struct {
	rpc.AccountsServer
	failures int64
	attempts atomic.Int64
}

func (f *flakyAccounts) GetByToken(ctx context.Context, req *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	if n := f.attempts.Add(1); n <= f.failures {
		return nil, status.Errorf(codes.Unavailable, "attempt %d fails on purpose", n)
	}
	return f.AccountsServer.GetByToken(ctx, req)
}

func TestCacheServerRetriesAccounts(t *testing.T) {
	certs := devCerts(t)
	accounts := &flakyAccounts{AccountsServer: NewAccountsService(testAccounts, 0), failures: 2}
	addr := serveAccounts(t, certs, accounts, new(logCapture).logger())
	sys := startCacheWithAccounts(t, certs, addr, testAccountsTimeout, defaultAttempts)
	ctx := testContext(t)

	require.NoError(t, store(ctx, sys.cache, testToken, "k", "v"))
	assert.EqualValues(t, 3, accounts.attempts.Load())
	got, err := get(ctx, sys.cache, testToken, "k")
	require.NoError(t, err)
	assert.Equal(t, "v", got)
	// The cache server logs one record per call it made, whatever the attempts.
	assert.Equal(t, []rpcLine{
		{"client", getByToken, "OK"},
		{"server", cacheStore, "OK"},
		{"client", getByToken, "OK"},
		{"server", cacheGet, "OK"},
	}, sys.cacheLog.rpcs())
}

func TestBackoffIsFullJitterUnderAnExponentialCeiling(t *testing.T) {
	const base, max = 10 * time.Millisecond, 300 * time.Millisecond
	for n, ceiling := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 3: 40 * time.Millisecond, 5: 160 * time.Millisecond, 6: max, 60: max} {
		var low, high bool
		for range 1000 {
			d := backoff(n, base, max)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.Less(t, d, ceiling, "retry %d", n)
			low, high = low || d < ceiling/2, high || d >= ceiling/2
		}
		assert.True(t, low && high, "retry %d: waits spread over [0, %s)", n, ceiling)
	}
}
