package main

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"grpcworkshop/step10-streaming/rpc"
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

// serveStandIn serves what register registers on TLS with the certificate
// in certs: a stand-in for a server whose failures a test controls.
func serveStandIn(t *testing.T, certs string, register func(*grpc.Server)) string {
	t.Helper()
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(creds))
	register(srv)
	return serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return serve(ctx, srv, lis) })
}

// startFlaky serves a flakyCache and returns a client whose only
// interceptor is retry, to test retryUnary on its own.
func startFlaky(t *testing.T, failures int64, retry grpc.UnaryClientInterceptor) (*flakyCache, rpc.CacheClient) {
	t.Helper()
	certs := devCerts(t)
	flaky := &flakyCache{failures: failures}
	addr := serveStandIn(t, certs, func(srv *grpc.Server) { rpc.RegisterCacheServer(srv, flaky) })
	creds, err := credentials.NewClientTLSFromFile(filepath.Join(certs, "ca.crt"), "")
	require.NoError(t, err)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithChainUnaryInterceptor(retry))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return flaky, rpc.NewCacheClient(conn)
}

func TestClientCommandRetriesAsManyTimesAsItsFlagSays(t *testing.T) {
	certs := devCerts(t)
	flaky := &flakyCache{failures: 2}
	cfg := testClientConfig(t, certs, serveStandIn(t, certs, func(srv *grpc.Server) { rpc.RegisterCacheServer(srv, flaky) }))
	// The attempts end these calls, not the deadline (1s by default: a busy
	// machine's TLS handshake and backoffs can outlast it).
	cfg.storeTimeout = time.Minute

	cfg.attempts = 2
	_, err := runClientCmd(t, cfg, "store", "k", "v")
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
	assert.EqualValues(t, 2, flaky.attempts.Load())

	flaky.attempts.Store(0)
	cfg.attempts = 3
	out, err := runClientCmd(t, cfg, "store", "k", "v")
	require.NoError(t, err)
	assert.Equal(t, "Stored k\n", out)
	assert.EqualValues(t, 3, flaky.attempts.Load())
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
	accounts := &flakyAccounts{AccountsServer: NewAccountsService(testAccountsMap(t), 0), failures: 2}
	addr := serveStandIn(t, certs, func(srv *grpc.Server) { rpc.RegisterAccountsServer(srv, accounts) })
	cfg := testServerConfig(t, certs, addr)
	cfg.accountsAttempts = defaultAttempts
	sys := startCacheWith(t, certs, cfg)
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

func TestClientCommandGetsThroughAServerThatFailsTwice(t *testing.T) {
	// A stand-in cache server that fails the first two attempts of every
	// call with Unavailable, as a dropped connection does, and then
	// answers; it counts the attempts of each method.
	certs := devCerts(t)
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	var mu sync.Mutex
	attempts := make(map[string]int)
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		mu.Lock()
		attempts[method]++
		n := attempts[method]
		mu.Unlock()
		if n <= 2 {
			return status.Errorf(codes.Unavailable, "attempt %d fails on purpose", n)
		}
		return stream.SendMsg(&emptypb.Empty{}) // an empty StoreResp on the wire
	}))
	addr := serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return serve(ctx, srv, lis) })
	// The client command's own defaults (testClientConfig turns retries off).
	cfg, err := parseClientFlags([]string{"-addr", addr, "-ca", filepath.Join(certs, "ca.crt")})
	require.NoError(t, err)

	out, err := runClientCmd(t, cfg, "store", "k", "v")
	require.NoError(t, err, "the client command gave up after the first failure")
	assert.Contains(t, out, "Stored k")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{"/rpc.Cache/Store": 3}, attempts)
}
