package client

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/rpc"
)

// failing answers every call with err, counting the attempts of each method.
type failing struct {
	rpc.UnimplementedCacheServer
	rpc.UnimplementedAccountsServer
	err                 error
	stores, gets, other atomic.Int64
}

func (f *failing) Store(context.Context, *rpc.StoreReq) (*rpc.StoreResp, error) {
	f.stores.Add(1)
	return nil, f.err
}

func (f *failing) Get(context.Context, *rpc.GetReq) (*rpc.GetResp, error) {
	f.gets.Add(1)
	return nil, f.err
}

// GetByToken stands for any method not listed in RetryableMethods.
func (f *failing) GetByToken(context.Context, *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	f.other.Add(1)
	return nil, f.err
}

func serve(t *testing.T, err error) (*failing, *grpc.ClientConn) {
	t.Helper()
	f := &failing{err: err}
	srv := grpc.NewServer()
	rpc.RegisterCacheServer(srv, f)
	rpc.RegisterAccountsServer(srv, f)
	lis, lerr := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, lerr)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, derr := Dial(lis.Addr().String(), Options{Retry: RetryPolicy{InitialBackoff: time.Millisecond}})
	require.NoError(t, derr)
	t.Cleanup(func() { conn.Close() })
	return f, conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAMethodNotListedAsSafeIsAttemptedOnceOnUnavailable(t *testing.T) {
	f, conn := serve(t, status.Error(codes.Unavailable, "draining"))
	_, err := rpc.NewAccountsClient(conn).GetByToken(ctxT(t), &rpc.GetByTokenReq{Token: "x"})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.EqualValues(t, 1, f.other.Load())

	_, err = rpc.NewCacheClient(conn).Get(ctxT(t), &rpc.GetReq{Key: "k"})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.EqualValues(t, 4, f.gets.Load(), "a listed method is retried by the service config's policy")
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	f, conn := serve(t, apierr.ToStatus(fault.OverQuota("t", 3)))
	_, err := rpc.NewCacheClient(conn).Store(ctxT(t), &rpc.StoreReq{Key: "k"})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.EqualValues(t, 1, f.stores.Load())
}

func TestRateLimitsAreRetriedAfterRetryInfo(t *testing.T) {
	f, conn := serve(t, apierr.ToStatus(fault.OverRate("service", time.Millisecond)))
	_, err := rpc.NewCacheClient(conn).Get(ctxT(t), &rpc.GetReq{Key: "k"})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.EqualValues(t, 4, f.gets.Load(), "the interceptor honours RetryInfo where the policy cannot")

	_, err = rpc.NewAccountsClient(conn).GetByToken(ctxT(t), &rpc.GetByTokenReq{Token: "x"})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.EqualValues(t, 1, f.other.Load(), "but only for methods safe to retry")
}

func TestRetryThrottlingStopsRetriesWhenMostCallsFail(t *testing.T) {
	f, conn := serve(t, status.Error(codes.Unavailable, "down"))
	c := rpc.NewCacheClient(conn)
	for range 100 {
		_, err := c.Get(ctxT(t), &rpc.GetReq{Key: "k"})
		require.Equal(t, codes.Unavailable, status.Code(err))
	}
	// Without throttling: 100 calls x 4 attempts. With it, retries stop
	// once half the tokens are gone, and every call is tried once.
	assert.Less(t, f.gets.Load(), int64(110))
}

func TestServiceConfigWithoutRetries(t *testing.T) {
	assert.NotContains(t, ServiceConfig(RetryPolicy{MaxAttempts: 1}), "retryPolicy")
	assert.Contains(t, ServiceConfig(RetryPolicy{}), `"maxAttempts":4`)
}

func TestAKeepaliveBelowGRPCsFloorIsRefused(t *testing.T) {
	_, err := Dial("127.0.0.1:1", Options{KeepaliveTime: 5 * time.Second})
	require.ErrorContains(t, err, "keepalive time 5s is below gRPC's minimum of 10s")
	_, err = Dial("127.0.0.1:1", Options{KeepaliveTimeout: -time.Second})
	require.ErrorContains(t, err, "negative keepalive timeout")
	conn, err := Dial("127.0.0.1:1", Options{KeepaliveTime: MinKeepaliveTime, KeepaliveTimeout: time.Second})
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}
