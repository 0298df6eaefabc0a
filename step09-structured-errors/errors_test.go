package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step09-structured-errors/rpc"
)

// startRetryingSystem runs the system with clients that retry as the
// commands do by default, using the Accounts service at accountsAddr, or a
// new one when it is empty.
func startRetryingSystem(t *testing.T, accountsAddr string) *testSystem {
	t.Helper()
	certs := devCerts(t)
	if accountsAddr == "" {
		accountsAddr = startAccounts(t, testAccountsConfig(t, certs, testAccounts))
	}
	cfg := testServerConfig(t, certs, accountsAddr)
	cfg.accountsAttempts = defaultAttempts
	sys := startCacheWith(t, certs, cfg)
	sys.cache = sys.retryingClient(t)
	return sys
}

// retryingClient connects to the cache server as the client command does by
// default, retrying.
func (s *testSystem) retryingClient(t *testing.T) rpc.CacheClient {
	t.Helper()
	cfg := testClientConfig(t, s.certs, s.addr)
	cfg.attempts = defaultAttempts
	return connect(t, cfg)
}

// attempts counts the calls to method that reached the cache server.
func (s *testSystem) attempts(method string) int {
	n := 0
	for _, r := range s.cacheLog.rpcs() {
		if r.side == "server" && r.method == method {
			n++
		}
	}
	return n
}

func requireDetail(t *testing.T, err error) *rpc.Error {
	t.Helper()
	e, ok := rpc.FromError(err)
	require.True(t, ok, "no Error detail in %v", err)
	assert.Equal(t, int64(status.Code(err)), e.GetCode(), "the detail repeats the code")
	assert.Equal(t, status.Convert(err).Message(), e.GetMessage(), "and the message")
	return e
}

func TestMissingKeyIsNotFoundOnTheFirstAttempt(t *testing.T) {
	sys := startRetryingSystem(t, "")

	_, err := get(testContext(t), sys.cache, testToken, "nothing-here")
	assert.Equal(t, codes.NotFound, status.Code(err), "got %v", err)
	assert.Equal(t, 1, sys.attempts(cacheGet), "retrying cannot make the key appear")
	e := requireDetail(t, err)
	assert.False(t, e.GetTemporary())
	assert.Equal(t, rpc.UserErrorKeyNotFound, e.GetUserErrorCode())
}

func TestStoreOverQuotaIsFailedPreconditionOnTheFirstAttempt(t *testing.T) {
	sys := startRetryingSystem(t, "")
	ctx := testContext(t)
	for i := range 3 {
		require.NoError(t, store(ctx, sys.cache, "small", fmt.Sprint("k", i), "v"))
	}

	err := store(ctx, sys.cache, "small", "one-too-many", "v")
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "got %v", err)
	assert.Equal(t, 4, sys.attempts(cacheStore), "three Stores and one refused attempt")
	e := requireDetail(t, err)
	assert.False(t, e.GetTemporary())
	assert.Equal(t, rpc.UserErrorOverQuota, e.GetUserErrorCode())
}

func TestUnavailableAccountsIsTemporaryAndRetried(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens here any more
	sys := startRetryingSystem(t, deadAddr)

	err = store(testContext(t), sys.cache, testToken, "k", "v")
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
	assert.True(t, requireDetail(t, err).GetTemporary())
	assert.Equal(t, defaultAttempts, sys.attempts(cacheStore))
}

func TestSlowAccountsIsTemporaryAndRetried(t *testing.T) {
	sys, _ := startSlowSystem(t, 20*time.Millisecond) // Accounts would take an hour
	warmUp := sys.attempts(cacheGet)                  // startSlowSystem's Gets that opened the connections

	_, err := get(testContext(t), sys.retryingClient(t), testToken, "k")
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "got %v", err)
	assert.True(t, requireDetail(t, err).GetTemporary())
	assert.Equal(t, defaultAttempts, sys.attempts(cacheGet)-warmUp)
}

func TestClientThatIgnoresTheDetailStillGetsCodeAndMessage(t *testing.T) {
	sys := startSystem(t)
	// A client as another language's would be: no interceptors, no rpc.FromError.
	creds, err := credentials.NewClientTLSFromFile(filepath.Join(sys.certs, "ca.crt"), "")
	require.NoError(t, err)
	conn, err := grpc.NewClient(sys.addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	plain := rpc.NewCacheClient(conn)
	ctx := testContext(t)

	_, err = plain.Get(ctx, &rpc.GetReq{Key: "nothing-here", AccountToken: testToken})
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.EqualError(t, err, `rpc error: code = NotFound desc = key "nothing-here" not found`)

	for i := range 3 {
		require.NoError(t, store(ctx, plain, "small", fmt.Sprint("k", i), "v"))
	}
	err = store(ctx, plain, "small", "one-too-many", "v")
	assert.EqualError(t, err, "rpc error: code = FailedPrecondition desc = account exceeds max key limit 3")
}

func TestEveryCacheErrorBecomesItsStatusInOnePlace(t *testing.T) {
	for _, tc := range []struct {
		err       error
		code      codes.Code
		msg       string
		temporary bool
		userCode  int64
	}{
		{errEmptyKey, codes.InvalidArgument, "key must not be empty", false, rpc.UserErrorInvalidArgument},
		{fmt.Errorf("%w, got %q", errBadDryRun, []string{"yes"}), codes.InvalidArgument, `dry-run must be one of "1", "true", "0" or "false", got ["yes"]`, false, rpc.UserErrorInvalidArgument},
		{fmt.Errorf("key %q %w", "k", errNotFound), codes.NotFound, `key "k" not found`, false, rpc.UserErrorKeyNotFound},
		{fmt.Errorf("%w %d", errOverQuota, 3), codes.FailedPrecondition, "account exceeds max key limit 3", false, rpc.UserErrorOverQuota},
		{errMissingToken, codes.Unauthenticated, "missing account token", false, rpc.UserErrorUnknownToken},
		{errUnknownToken, codes.Unauthenticated, "unknown account token", false, rpc.UserErrorUnknownToken},
		{fmt.Errorf("%w: %s", errAccountsDown, "connection refused"), codes.Unavailable, "accounts service: connection refused", true, 0},
		{errAccountsTimeout, codes.DeadlineExceeded, "accounts service did not answer in time", true, 0},
		{errCanceled, codes.Canceled, "call canceled", false, 0},
		{errors.New("something unforeseen"), codes.Internal, "something unforeseen", false, 0},
	} {
		err := toRPCError(tc.err)
		st := status.Convert(err)
		assert.Equal(t, tc.code, st.Code(), "%v", tc.err)
		assert.Equal(t, tc.msg, st.Message())
		e, ok := rpc.FromError(err)
		if assert.True(t, ok, "%v has no detail", tc.err) {
			assert.Equal(t, tc.temporary, e.GetTemporary(), "%v", tc.err)
			assert.Equal(t, tc.userCode, e.GetUserErrorCode(), "%v", tc.err)
		}
	}
	// A status that gRPC itself made passes through unchanged.
	st := status.New(codes.ResourceExhausted, "message too large")
	assert.Equal(t, st.Err(), toRPCError(st.Err()))
}

// failingCache fails every Get with err and counts the attempts.
type failingCache struct {
	rpc.UnimplementedCacheServer
	err      error
	attempts atomic.Int64
}

func (f *failingCache) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	f.attempts.Add(1)
	return nil, f.err
}

func TestRetryFollowsTheTemporaryFlag(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		attempts int64
	}{
		{"temporary detail", rpc.Errorf(codes.NotFound, true, "try again"), 3},
		{"permanent detail", rpc.Errorf(codes.Unavailable, false, "do not try again"), 1},
		{"no detail, Unavailable", status.Error(codes.Unavailable, "no connection"), 3},
		{"no detail, anything else", status.Error(codes.Internal, "broken"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs := devCerts(t)
			fake := &failingCache{err: tc.err}
			cfg := testClientConfig(t, certs, serveStandIn(t, certs, func(srv *grpc.Server) { rpc.RegisterCacheServer(srv, fake) }))
			cfg.attempts = 3

			_, err := get(testContext(t), connect(t, cfg), testToken, "k")
			assert.Equal(t, status.Code(tc.err), status.Code(err))
			assert.Equal(t, tc.attempts, fake.attempts.Load())
		})
	}
}

func TestClientCommandPrintsWhatTheErrorDetailSays(t *testing.T) {
	sys := startSystem(t)
	_, err := runClientCmd(t, testClientConfig(t, sys.certs, sys.addr), "get", "nothing-here")
	assert.Equal(t, codes.NotFound, status.Code(err), "got %v", err)
	assert.Contains(t, err.Error(), fmt.Sprintf("(temporary: false, user error code: %d)", rpc.UserErrorKeyNotFound))
}

func TestMissingKeyIsAttemptedOnceByARetryingClient(t *testing.T) {
	sys := startSystem(t)
	cfg := testClientConfig(t, sys.certs, sys.addr)
	cfg.attempts = defaultAttempts

	_, err := get(testContext(t), connect(t, cfg), testToken, "nothing-here")
	assert.Equal(t, codes.NotFound, status.Code(err), "got %v", err)
	served := 0
	for _, r := range sys.cacheLog.rpcs() {
		if r.side == "server" && r.method == cacheGet {
			served++
		}
	}
	assert.Equal(t, 1, served, "retrying cannot make the key appear")
}
