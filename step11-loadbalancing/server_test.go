package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

const testToken = "inconshreveable"

// testAccounts are the accounts the test Accounts service knows.
var testAccounts = map[string]*rpc.Account{
	testToken: {MaxCacheKeys: 1000},
	"other":   {MaxCacheKeys: 1000},
	"small":   {MaxCacheKeys: 3},
}

// testAttempts turns retries off in tests that are not about them, so that
// every failure shows at once and reaches each server once.
const testAttempts = 1

// testAccountsTimeout is the cache server's cap on Accounts calls in tests
// that are not about it: long, so only a test's own deadline matters.
const testAccountsTimeout = time.Minute

// testSystem is an Accounts server and a cache server using it, both on TLS.
// Each process logs to its own capture.
type testSystem struct {
	certs string
	addr  string // the cache server's
	srv   *grpc.Server
	svc   *CacheService
	cache rpc.CacheClient

	clientLog, cacheLog, accountsLog *logCapture
}

// startCache runs the whole system for the test's lifetime and returns a
// client that trusts it.
func startCache(t *testing.T) rpc.CacheClient {
	return startSystem(t).cache
}

func startSystem(t *testing.T) *testSystem {
	t.Helper()
	certs := devCerts(t)
	accountsLog := new(logCapture)
	accountsAddr := serveAccounts(t, certs, NewAccountsService(testAccounts, 0), accountsLog.logger())
	sys := startCacheWithAccounts(t, certs, accountsAddr, testAccountsTimeout, testAttempts)
	sys.accountsLog = accountsLog
	return sys
}

// startCacheWithAccounts runs a cache server wired like runServer's, and a
// client like runClient's.
func startCacheWithAccounts(t *testing.T, certs, accountsAddr string, accountsTimeout time.Duration, attempts int) *testSystem {
	t.Helper()
	return startLimitedCache(t, certs, accountsAddr, accountsTimeout, attempts, limits{})
}

// startLimitedCache is startCacheWithAccounts with the server's flow control
// set to lim; the zero limits are none at all.
func startLimitedCache(t *testing.T, certs, accountsAddr string, accountsTimeout time.Duration, attempts int, lim limits) *testSystem {
	t.Helper()
	cacheLog, clientLog := new(logCapture), new(logCapture)
	accounts := dial(t, accountsAddr, clientTLS(t, certs), grpc.WithChainUnaryInterceptor(logUnaryClient(cacheLog.logger()), retryUnary(attempts, time.Millisecond, 10*time.Millisecond)))
	svc := NewCacheService(rpc.NewAccountsClient(accounts), accountsTimeout)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String() // also the replica's name, as in runServer
	srv := grpc.NewServer(append(lim.serverOptions(), grpc.Creds(serverTLS(t, certs)),
		grpc.ChainUnaryInterceptor(logUnaryServer(cacheLog.logger()), replicaUnaryServer(addr), errorsUnaryServer, dryRunUnaryServer),
		grpc.ChainStreamInterceptor(logStreamServer(cacheLog.logger()), replicaStreamServer(addr), errorsStreamServer, dryRunStreamServer))...)
	rpc.RegisterCacheServer(srv, svc)
	go srv.Serve(lim.listener(lis))
	t.Cleanup(srv.Stop)
	return &testSystem{
		certs:     certs,
		addr:      addr,
		srv:       srv,
		svc:       svc,
		cache:     rpc.NewCacheClient(dial(t, addr, clientTLS(t, certs), grpc.WithChainUnaryInterceptor(logUnaryClient(clientLog.logger()), retryUnary(attempts, time.Millisecond, 10*time.Millisecond)), grpc.WithChainStreamInterceptor(logStreamClient(clientLog.logger()), retryStream(attempts, time.Millisecond, 10*time.Millisecond)))),
		clientLog: clientLog,
		cacheLog:  cacheLog,
	}
}

func serveAccounts(t *testing.T, certs string, svc rpc.AccountsServer, log *slog.Logger) string {
	t.Helper()
	srv := grpc.NewServer(grpc.Creds(serverTLS(t, certs)), grpc.ChainUnaryInterceptor(logUnaryServer(log)))
	rpc.RegisterAccountsServer(srv, svc)
	return serveOnLoopback(t, srv)
}

func serveOnLoopback(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// devCerts creates fresh certificates, so nothing in the repository expires.
func devCerts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, writeDevCerts(dir, []string{"localhost", "127.0.0.1"}))
	return dir
}

func serverTLS(t *testing.T, certs string) credentials.TransportCredentials {
	t.Helper()
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	return creds
}

func clientTLS(t *testing.T, certs string) credentials.TransportCredentials {
	t.Helper()
	creds, err := credentials.NewClientTLSFromFile(filepath.Join(certs, "ca.crt"), "")
	require.NoError(t, err)
	return creds
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds))...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStoreThenGetRoundTrip(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	_, err := cache.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: []byte("con"), AccountToken: testToken})
	require.NoError(t, err)
	resp, err := cache.Get(ctx, &rpc.GetReq{Key: "gopher", AccountToken: testToken})
	require.NoError(t, err)
	assert.Equal(t, "con", string(resp.Val))
}

func TestConcurrentStoresAndGetsAreSafe(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	const workers, keysEach = 16, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range keysEach {
				key := fmt.Sprintf("w%d-k%d", w, i)
				val := []byte(fmt.Sprintf("v%d", i))
				if _, err := cache.Store(ctx, &rpc.StoreReq{Key: key, Val: val, AccountToken: testToken}); !assert.NoError(t, err) {
					return
				}
				resp, err := cache.Get(ctx, &rpc.GetReq{Key: key, AccountToken: testToken})
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, val, resp.Val)
			}
		})
	}
	wg.Wait()

	for w := range workers {
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: fmt.Sprintf("w%d-k%d", w, keysEach-1), AccountToken: testToken})
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("v%d", keysEach-1), string(resp.Val))
	}
}

func TestStoredValueIsACopy(t *testing.T) {
	svc := startSystem(t).svc
	ctx := testContext(t)

	val := []byte("con")
	_, err := svc.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: val, AccountToken: testToken})
	require.NoError(t, err)
	val[0] = 'X' // the caller reuses its buffer

	resp, err := svc.Get(ctx, &rpc.GetReq{Key: "gopher", AccountToken: testToken})
	require.NoError(t, err)
	assert.Equal(t, "con", string(resp.Val))

	resp.Val[0] = 'Y' // and mutates what Get gave it
	again, err := svc.Get(ctx, &rpc.GetReq{Key: "gopher", AccountToken: testToken})
	require.NoError(t, err)
	assert.Equal(t, "con", string(again.Val))
}

func TestGetMissingKeyIsNotFound(t *testing.T) {
	cache := startCache(t)

	_, err := cache.Get(testContext(t), &rpc.GetReq{Key: "nothing-here", AccountToken: testToken})
	require.Error(t, err)
	st := status.Convert(err)
	assert.Equal(t, codes.NotFound, st.Code())
	assert.Contains(t, st.Message(), `"nothing-here"`)
}

func TestEmptyKeyIsInvalidArgument(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	_, err := cache.Store(ctx, &rpc.StoreReq{Key: "", Val: []byte("v"), AccountToken: testToken})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = cache.Get(ctx, &rpc.GetReq{Key: "", AccountToken: testToken})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))

	// The server keeps serving after bad input.
	_, err = cache.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v"), AccountToken: testToken})
	assert.NoError(t, err)
}
