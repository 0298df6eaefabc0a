package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/step05-interceptors/rpc"
)

const testToken = "inconshreveable"

// testAccounts are the accounts the test Accounts service knows, in the
// accounts command's file format.
const testAccounts = `{
	"inconshreveable": {"max_cache_keys": 1000},
	"other": {"max_cache_keys": 1000},
	"small": {"max_cache_keys": 3}
}`

// testSystem is an Accounts server and a cache server using it, both on TLS.
// Each process logs to its own capture.
type testSystem struct {
	certs string
	addr  string // the cache server's
	cache rpc.CacheClient

	clientLog, cacheLog, accountsLog *logCapture
}

// startCache runs the whole system for the test's lifetime and returns a
// client connected as the client command connects.
func startCache(t *testing.T) rpc.CacheClient {
	return startSystem(t).cache
}

func startSystem(t *testing.T) *testSystem {
	t.Helper()
	certs := devCerts(t)
	accountsLog := new(logCapture)
	acfg := testAccountsConfig(t, certs, testAccounts)
	acfg.logger = accountsLog.logger()
	sys := startCacheWith(t, certs, testServerConfig(t, certs, startAccounts(t, acfg)))
	sys.accountsLog = accountsLog
	return sys
}

// startCacheWith runs runServer with cfg and connects to it as the client
// command does, each logging to a capture.
func startCacheWith(t *testing.T, certs string, cfg serverConfig) *testSystem {
	t.Helper()
	cacheLog, clientLog := new(logCapture), new(logCapture)
	cfg.logger = cacheLog.logger()
	addr := startServer(t, cfg)
	ccfg := testClientConfig(t, certs, addr)
	ccfg.logger = clientLog.logger()
	return &testSystem{
		certs:     certs,
		addr:      addr,
		cache:     connect(t, ccfg),
		clientLog: clientLog,
		cacheLog:  cacheLog,
	}
}

// startServer runs runServer, as the server command does, on a free
// loopback port until the test ends, and returns its address.
func startServer(t *testing.T, cfg serverConfig) string {
	t.Helper()
	return serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return runServer(ctx, cfg, lis) })
}

// startAccounts runs runAccounts, as the accounts command does, on a free
// loopback port until the test ends, and returns its address.
func startAccounts(t *testing.T, cfg accountsConfig) string {
	t.Helper()
	return serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return runAccounts(ctx, cfg, lis) })
}

// serveOnLoopback runs run on a free loopback port until the test ends.
func serveOnLoopback(t *testing.T, run func(context.Context, net.Listener) error) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done, "server")
	})
	return lis.Addr().String()
}

// devCerts creates fresh certificates, so nothing in the repository expires.
func devCerts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, writeDevCerts(dir, []string{"localhost", "127.0.0.1"}))
	return dir
}

// testAccountsConfig is the accounts command's defaults, with the
// certificate in certs and the accounts in accountsJSON.
func testAccountsConfig(t *testing.T, certs, accountsJSON string) accountsConfig {
	t.Helper()
	cfg, err := parseAccountsFlags(nil)
	require.NoError(t, err)
	cfg.certFile, cfg.keyFile = filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key")
	cfg.file = filepath.Join(t.TempDir(), "accounts.json")
	require.NoError(t, os.WriteFile(cfg.file, []byte(accountsJSON), 0o600))
	return cfg
}

// testServerConfig is the server command's defaults, with the certificate
// in certs, using the Accounts service at accountsAddr.
func testServerConfig(t *testing.T, certs, accountsAddr string) serverConfig {
	t.Helper()
	cfg, err := parseServerFlags(nil)
	require.NoError(t, err)
	cfg.certFile, cfg.keyFile = filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key")
	cfg.caFile, cfg.accountsAddr = filepath.Join(certs, "ca.crt"), accountsAddr
	return cfg
}

// testClientConfig is the client command's defaults, pointed at addr and
// trusting the CA in certs.
func testClientConfig(t *testing.T, certs, addr string) clientConfig {
	t.Helper()
	cfg, err := parseClientFlags(nil)
	require.NoError(t, err)
	cfg.addr, cfg.caFile = addr, filepath.Join(certs, "ca.crt")
	return cfg
}

// connect dials as the client command does, for the test's lifetime.
func connect(t *testing.T, cfg clientConfig) rpc.CacheClient {
	t.Helper()
	conn, err := dial(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return rpc.NewCacheClient(conn)
}

// localAccounts answers as the Accounts service does, in process, for
// tests of CacheService's own methods.
type localAccounts struct{ svc *AccountsService }

func (a localAccounts) GetByToken(ctx context.Context, req *rpc.GetByTokenReq, _ ...grpc.CallOption) (*rpc.GetByTokenResp, error) {
	return a.svc.GetByToken(ctx, req)
}

// newLocalCacheService is a CacheService with no network around it.
func newLocalCacheService(t *testing.T) *CacheService {
	t.Helper()
	accounts, err := parseAccounts([]byte(testAccounts))
	require.NoError(t, err)
	return NewCacheService(localAccounts{NewAccountsService(accounts)})
}

// runClientCmd runs the client command's runClient with args as its
// command and returns what it printed.
func runClientCmd(t *testing.T, cfg clientConfig, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cfg.cmd = args
	err := runClient(testContext(t), cfg, &out)
	return out.String(), err
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard, not a speed target
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

func TestClientCommandStoresAndGetsTheTalksValue(t *testing.T) {
	sys := startSystem(t)
	cfg := testClientConfig(t, sys.certs, sys.addr)

	out, err := runClientCmd(t, cfg)
	require.NoError(t, err)
	assert.Equal(t, "Got cached value con\n", out)
	out, err = runClientCmd(t, cfg, "store", "lang", "go")
	require.NoError(t, err)
	assert.Equal(t, "Stored lang\n", out)
	out, err = runClientCmd(t, cfg, "get", "lang")
	require.NoError(t, err)
	assert.Equal(t, "Got cached value go\n", out)
}

func TestConcurrentStoresAndGetsAreSafe(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	const workers, keysEach = 8, 20
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
	svc := newLocalCacheService(t)
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
