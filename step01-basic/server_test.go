package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop/step01-basic/rpc"
)

// startServer runs runServer, as the server command does, on a free
// loopback port until the test ends, and returns its address.
func startServer(t *testing.T, cfg serverConfig) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServer(ctx, cfg, lis) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done, "runServer")
	})
	return lis.Addr().String()
}

// testServerConfig is the server command's defaults.
func testServerConfig(t *testing.T) serverConfig {
	t.Helper()
	cfg, err := parseServerFlags(nil)
	require.NoError(t, err)
	return cfg
}

// testClientConfig is the client command's defaults, pointed at addr.
func testClientConfig(t *testing.T, addr string) clientConfig {
	t.Helper()
	cfg, err := parseClientFlags(nil)
	require.NoError(t, err)
	cfg.addr = addr
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

// startCache runs the server command's server and returns a client
// connected as the client command connects.
func startCache(t *testing.T) rpc.CacheClient {
	t.Helper()
	return connect(t, testClientConfig(t, startServer(t, testServerConfig(t))))
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

	_, err := cache.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: []byte("con")})
	require.NoError(t, err)
	resp, err := cache.Get(ctx, &rpc.GetReq{Key: "gopher"})
	require.NoError(t, err)
	assert.Equal(t, "con", string(resp.Val))
}

func TestClientCommandStoresAndGetsTheTalksValue(t *testing.T) {
	cfg := testClientConfig(t, startServer(t, testServerConfig(t)))

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
				if _, err := cache.Store(ctx, &rpc.StoreReq{Key: key, Val: val}); !assert.NoError(t, err) {
					return
				}
				resp, err := cache.Get(ctx, &rpc.GetReq{Key: key})
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, val, resp.Val)
			}
		})
	}
	wg.Wait()

	for w := range workers {
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: fmt.Sprintf("w%d-k%d", w, keysEach-1)})
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("v%d", keysEach-1), string(resp.Val))
	}
}

func TestStoredValueIsACopy(t *testing.T) {
	svc := NewCacheService()
	ctx := testContext(t)

	val := []byte("con")
	_, err := svc.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: val})
	require.NoError(t, err)
	val[0] = 'X' // the caller reuses its buffer

	resp, err := svc.Get(ctx, &rpc.GetReq{Key: "gopher"})
	require.NoError(t, err)
	assert.Equal(t, "con", string(resp.Val))

	resp.Val[0] = 'Y' // and mutates what Get gave it
	again, err := svc.Get(ctx, &rpc.GetReq{Key: "gopher"})
	require.NoError(t, err)
	assert.Equal(t, "con", string(again.Val))
}
