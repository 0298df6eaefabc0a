package main

import (
	"context"
	"log/slog"
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
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// startLimitedSystem is startSystem with the cache server's flow control set to lim.
func startLimitedSystem(t *testing.T, lim limits) *testSystem {
	t.Helper()
	certs := devCerts(t)
	accountsLog := new(logCapture)
	acfg := testAccountsConfig(t, certs, testAccounts)
	acfg.logger = accountsLog.logger()
	cfg := testServerConfig(t, certs, startAccounts(t, acfg))
	cfg.limits = lim
	sys := startCacheWith(t, certs, cfg)
	sys.accountsLog = accountsLog
	return sys
}

// dialed connects as the client command does; the test closes it, or its
// cleanup does.
func dialed(t *testing.T, cfg clientConfig) *grpc.ClientConn {
	t.Helper()
	conn, err := dial(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestCallsOverTheRateAreResourceExhaustedBeforeAnyWork(t *testing.T) {
	// A burst of 3, refilled once a day: the 4th call is over the rate.
	sys := startLimitedSystem(t, limits{rate: 1.0 / 86400, burst: 3})
	ctx := testContext(t)

	require.NoError(t, store(ctx, sys.cache, testToken, "k", "v"))
	_, err := get(ctx, sys.cache, testToken, "k")
	require.NoError(t, err)
	_, err = readDump(t, sys.cache, testToken)
	require.NoError(t, err)

	err = store(ctx, sys.cache, testToken, "k2", "v")
	st := status.Convert(err)
	assert.Equal(t, codes.ResourceExhausted, st.Code(), "got %v", err)
	assert.Equal(t, "service is over rate limit", st.Message())
	e, ok := rpc.FromError(err)
	require.True(t, ok, "the refusal carries the structured error")
	assert.True(t, e.GetTemporary(), "a refused call may pass later")
	_, err = readDump(t, sys.cache, testToken)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "streams are limited too: %v", err)

	// Refused in the tap: no handler ran, so nobody asked Accounts.
	assert.Len(t, sys.accountsLog.rpcs(), 3)
}

func TestConnectionsOverTheCapWaitUntilOneCloses(t *testing.T) {
	sys := startLimitedSystem(t, limits{maxConns: 1})
	first := dialed(t, testClientConfig(t, sys.certs, sys.addr))
	second := dialed(t, testClientConfig(t, sys.certs, sys.addr))
	ctx := testContext(t)

	require.NoError(t, store(ctx, rpc.NewCacheClient(first), testToken, "k", "v"))

	// The server does not accept the second connection while the first is
	// open, so a call on it cannot finish, however long it is given.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := get(short, rpc.NewCacheClient(second), testToken, "k")
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "got %v", err)

	require.NoError(t, first.Close())
	resp, err := rpc.NewCacheClient(second).Get(ctx, &rpc.GetReq{Key: "k", AccountToken: testToken}, grpc.WaitForReady(true))
	require.NoError(t, err, "the second connection is served once the first closes")
	assert.Equal(t, "v", string(resp.Val))
}

func TestLimitsOfZeroMeanNone(t *testing.T) {
	var lim limits
	assert.Len(t, lim.serverOptions(), 1, "no tap handler without a rate")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	assert.Same(t, lis, lim.listener(lis), "no cap on connections")
}

func TestAFloodOfCallsIsPartlyRefusedBeforeAnyWork(t *testing.T) {
	// The server command with its default limits (testServerConfig lifts
	// the rate limit for the other tests).
	certs := devCerts(t)
	accountsLog := new(logCapture)
	acfg := testAccountsConfig(t, certs, testAccounts)
	acfg.logger = accountsLog.logger()
	cfg, err := parseServerFlags([]string{
		"-accounts", startAccounts(t, acfg), "-ca", filepath.Join(certs, "ca.crt"),
		"-cert", filepath.Join(certs, "server.crt"), "-key", filepath.Join(certs, "server.key"),
	})
	require.NoError(t, err)
	cfg.logger = slog.New(slog.DiscardHandler) // a record per call on stderr would slow the flood
	cfg.accountsTimeout = time.Minute          // the calls let through wait for Accounts together
	addr := startServer(t, cfg)
	var conns [4]rpc.CacheClient // 64 calls in flight on each (-max-streams)
	for i := range conns {
		conns[i] = connect(t, testClientConfig(t, certs, addr))
	}
	ctx := testContext(t)

	// 256 callers making Gets as fast as they can, until one is refused: a
	// burst far above 50 arrives at once, whatever the machine's speed, so
	// a token bucket of 150 calls/s with a burst of 50 refuses some. It
	// never serves more than 50 + 150 per second since the flood began: a
	// server that serves more has no limit, and the flood stops there (a
	// server with the limit never gets there, however slow or fast the
	// machine). The test checks the outcome: a call of the flood was refused.
	var served, refused atomic.Int64
	start := time.Now()
	beyondTheRate := func() bool { return float64(served.Load()) > 50+150*time.Since(start).Seconds()+1 }
	var wg sync.WaitGroup
	for i := range 256 {
		wg.Go(func() {
			for refused.Load() == 0 && !beyondTheRate() && ctx.Err() == nil {
				_, err := get(ctx, conns[i%len(conns)], testToken, "k")
				switch status.Code(err) {
				case codes.NotFound:
					served.Add(1)
				case codes.ResourceExhausted:
					refused.Add(1)
				default:
					assert.NoError(t, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d served, %d refused in %v", served.Load(), refused.Load(), time.Since(start))
	assert.NotZero(t, refused.Load(), "the server took on a flood of %d calls and refused none", served.Load())
	// A refused call never reached a handler, so nobody asked Accounts for it.
	assert.EqualValues(t, served.Load(), len(accountsLog.rpcs()))
}
