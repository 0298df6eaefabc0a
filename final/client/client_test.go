package client

import (
	"context"
	"log/slog"
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
	return serveWith(t, err, Options{Retry: RetryPolicy{InitialBackoff: time.Millisecond}})
}

// serveWith is serve with the client's Options o.
func serveWith(t *testing.T, err error, o Options) (*failing, *grpc.ClientConn) {
	t.Helper()
	f := &failing{err: err}
	srv := grpc.NewServer()
	rpc.RegisterCacheServer(srv, f)
	rpc.RegisterAccountsServer(srv, f)
	lis, lerr := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, lerr)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, derr := Dial(lis.Addr().String(), o)
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
	sc, err := ServiceConfig(NoRetries)
	require.NoError(t, err)
	assert.NotContains(t, sc, "retryPolicy")
	assert.NotContains(t, sc, "retryThrottling")
	sc, err = ServiceConfig(RetryPolicy{})
	require.NoError(t, err)
	assert.Contains(t, sc, `"maxAttempts":4`)
	assert.Contains(t, sc, `"initialBackoff":"0.05s"`)
	assert.Contains(t, sc, `"maxBackoff":"1s"`)
}

// Every zero field means its documented default, and the defaults are the
// Default* constants.
func TestZeroOptionsTakeTheDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	assert.Equal(t, RetryPolicy{MaxAttempts: 4, InitialBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}, o.Retry)
	assert.Equal(t, DefaultRetryPolicy(), o.Retry)
	assert.Equal(t, 2*time.Second, o.ConnectTimeout)
	assert.Equal(t, DefaultConnectTimeout, o.ConnectTimeout)
	assert.Equal(t, DefaultKeepaliveTime, o.KeepaliveTime)
	assert.Equal(t, DefaultKeepaliveTimeout, o.KeepaliveTimeout)
	require.NotNil(t, o.Logger)
	assert.False(t, o.Logger.Enabled(context.Background(), slog.LevelError),
		"no Logger is no logging: not a line formatted for every call and thrown away")

	ka, err := KeepaliveParams(0, 0)
	require.NoError(t, err)
	assert.Equal(t, DefaultKeepaliveTime, ka.Time)
	assert.Equal(t, DefaultKeepaliveTimeout, ka.Timeout)

	// Set fields stay; a MaxBackoff left zero is never below InitialBackoff.
	p := RetryPolicy{MaxAttempts: 2, InitialBackoff: 3 * time.Second}.withDefaults()
	assert.Equal(t, RetryPolicy{MaxAttempts: 2, InitialBackoff: 3 * time.Second, MaxBackoff: 3 * time.Second}, p)
	o = Options{ConnectTimeout: time.Second, KeepaliveTime: time.Minute, KeepaliveTimeout: time.Second}.withDefaults()
	assert.Equal(t, time.Second, o.ConnectTimeout)
	assert.Equal(t, time.Minute, o.KeepaliveTime)
	assert.Equal(t, time.Second, o.KeepaliveTimeout)
}

// With Options{} (no Retry at all), a safe method is still retried, on
// Unavailable and on a rate limit, DefaultMaxAttempts times in all; with
// NoRetries it is tried once.
func TestTheZeroRetryPolicyRetriesAndNoRetriesDoesNot(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   RetryPolicy
		attempts int64
	}{
		{"zero", RetryPolicy{}, DefaultMaxAttempts},
		{"NoRetries", NoRetries, 1},
	} {
		for _, err := range []error{
			status.Error(codes.Unavailable, "draining"),
			apierr.ToStatus(fault.OverRate("service", time.Millisecond)),
		} {
			t.Run(tc.name+"/"+status.Code(err).String(), func(t *testing.T) {
				f, conn := serveWith(t, err, Options{Retry: tc.policy})
				_, cerr := rpc.NewCacheClient(conn).Get(ctxT(t), &rpc.GetReq{Key: "k"})
				assert.Equal(t, status.Code(err), status.Code(cerr))
				assert.Equal(t, tc.attempts, f.gets.Load())
			})
		}
	}
}

func TestNegativeOptionsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{ConnectTimeout: -time.Second}, "dial: negative connect timeout -1s"},
		{Options{Retry: RetryPolicy{MaxAttempts: -1}}, "dial: retry: negative MaxAttempts -1 (1 is no retry, 0 the default)"},
		{Options{Retry: RetryPolicy{MaxAttempts: 6}}, "dial: retry: MaxAttempts 6 is above gRPC's maximum of 5"},
		{Options{Retry: RetryPolicy{InitialBackoff: -time.Millisecond}}, "dial: retry: negative backoff -1ms, 0s"},
		{Options{Retry: RetryPolicy{MaxBackoff: -time.Second}}, "dial: retry: negative backoff 0s, -1s"},
	} {
		_, err := Dial("127.0.0.1:1", tc.o)
		assert.EqualError(t, err, tc.want)
	}
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
