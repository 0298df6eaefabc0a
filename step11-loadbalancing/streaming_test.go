package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// dumpAll reads a whole dump into a map, failing on a duplicate key.
func dumpAll(t *testing.T, cache rpc.CacheClient, token string) (map[string][]byte, error) {
	t.Helper()
	stream, err := cache.Dump(testContext(t), &rpc.DumpReq{AccountToken: token})
	if err != nil {
		return nil, err
	}
	items := make(map[string][]byte)
	for {
		item, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return items, nil
		}
		if err != nil {
			return items, err
		}
		require.NotContains(t, items, item.Key, "a key is dumped once")
		items[item.Key] = item.Val
	}
}

func TestDumpStreamsExactlyTheTenantsItems(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	want := make(map[string][]byte)
	for i := range 250 { // several batches
		key, val := fmt.Sprint("k", i), fmt.Sprint("v", i)
		require.NoError(t, store(ctx, cache, testToken, key, val))
		want[key] = []byte(val)
	}
	require.NoError(t, store(ctx, cache, testToken, "k7", "overwritten"))
	want["k7"] = []byte("overwritten")
	require.NoError(t, store(ctx, cache, "other", "k1", "theirs"))
	require.NoError(t, store(ctx, cache, "other", "only-theirs", "theirs"))

	got, err := dumpAll(t, cache, testToken)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	theirs, err := dumpAll(t, cache, "other")
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"k1": []byte("theirs"), "only-theirs": []byte("theirs")}, theirs)
}

func TestDumpOfAnEmptyAccountEndsAtOnce(t *testing.T) {
	got, err := dumpAll(t, startCache(t), testToken)
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestDumpNeedsAKnownToken(t *testing.T) {
	cache := startCache(t)
	for _, token := range []string{"no-such-token", ""} {
		_, err := dumpAll(t, cache, token)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "token %q: %v", token, err)
	}
}

// defaultMaxMsgSize is grpc-go's default limit on a received message.
const defaultMaxMsgSize = 4 << 20

func TestDumpLargerThanTheMessageLimitSucceeds(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	const items, size = 96, 64 << 10 // 6 MiB in all
	val := bytes.Repeat([]byte("x"), size)
	for i := range items {
		_, err := cache.Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("big", i), Val: val, AccountToken: testToken})
		require.NoError(t, err)
	}
	// A single message of that size is refused: that is what a unary Dump
	// returning every item at once would have run into.
	_, err := cache.Store(ctx, &rpc.StoreReq{Key: "huge", Val: make([]byte, items*size), AccountToken: testToken})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "got %v", err)

	got, err := dumpAll(t, cache, testToken)
	require.NoError(t, err)
	total := 0
	for _, v := range got {
		total += len(v)
	}
	assert.Len(t, got, items)
	assert.Greater(t, total, defaultMaxMsgSize)
}

func TestDumpDoesNotHoldTheLockWhileSending(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	val := bytes.Repeat([]byte("x"), 64<<10)
	for i := range 96 { // far more than gRPC buffers for a stream nobody reads
		_, err := cache.Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("big", i), Val: val, AccountToken: testToken})
		require.NoError(t, err)
	}
	stream, err := cache.Dump(ctx, &rpc.DumpReq{AccountToken: testToken})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	// The dump is now stuck in Send, waiting for this reader. A server that
	// held the lock while sending would block this Store until the test
	// times out.
	require.NoError(t, store(ctx, cache, testToken, "while-dumping", "v"))
	got, err := get(ctx, cache, testToken, "while-dumping")
	require.NoError(t, err)
	assert.Equal(t, "v", got)
}

func TestDumpIsLoggedOnBothSides(t *testing.T) {
	sys := startSystem(t)
	const cacheDump = "/rpc.Cache/Dump"

	_, err := dumpAll(t, sys.cache, testToken)
	require.NoError(t, err)
	_, err = dumpAll(t, sys.cache, "no-such-token")
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	assert.Equal(t, []rpcLine{
		{"client", cacheDump, "OK"},
		{"client", cacheDump, "Unauthenticated"},
	}, sys.clientLog.rpcs())
	assert.Equal(t, []rpcLine{
		{"client", getByToken, "OK"},
		{"server", cacheDump, "OK"},
		{"client", getByToken, "NotFound"},
		{"server", cacheDump, "Unauthenticated"},
	}, sys.cacheLog.rpcs())
}

// flakyDump fails its first failures Dumps before sending anything, or with
// afterFirst fails every Dump after its first item, and counts the attempts.
type flakyDump struct {
	rpc.UnimplementedCacheServer
	failures   int64
	afterFirst bool
	attempts   atomic.Int64
}

func (f *flakyDump) Dump(req *rpc.DumpReq, stream grpc.ServerStreamingServer[rpc.DumpItem]) error {
	n := f.attempts.Add(1)
	if f.afterFirst {
		if err := stream.Send(&rpc.DumpItem{Key: "first"}); err != nil {
			return err
		}
		return rpc.Errorf(codes.Unavailable, true, "lost after the first item")
	}
	if n <= f.failures {
		return rpc.Errorf(codes.Unavailable, true, "attempt %d fails on purpose", n)
	}
	for _, key := range []string{"a", "b"} {
		if err := stream.Send(&rpc.DumpItem{Key: key}); err != nil {
			return err
		}
	}
	return nil
}

func startFlakyDump(t *testing.T, flaky *flakyDump) rpc.CacheClient {
	t.Helper()
	certs := devCerts(t)
	srv := grpc.NewServer(grpc.Creds(serverTLS(t, certs)))
	rpc.RegisterCacheServer(srv, flaky)
	return rpc.NewCacheClient(dial(t, serveOnLoopback(t, srv), clientTLS(t, certs),
		grpc.WithChainStreamInterceptor(retryStream(3, time.Millisecond, 10*time.Millisecond))))
}

func TestDumpIsRetriedUntilItsFirstItem(t *testing.T) {
	flaky := &flakyDump{failures: 2}
	got, err := dumpAll(t, startFlakyDump(t, flaky), testToken)
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"a": nil, "b": nil}, got)
	assert.EqualValues(t, 3, flaky.attempts.Load())
}

func TestDumpIsNotRetriedAfterItsFirstItem(t *testing.T) {
	flaky := &flakyDump{afterFirst: true}
	got, err := dumpAll(t, startFlakyDump(t, flaky), testToken)
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
	assert.Equal(t, map[string][]byte{"first": nil}, got, "no item is seen twice")
	assert.EqualValues(t, 1, flaky.attempts.Load())
}

func TestNotIdempotentDumpIsAttemptedOnce(t *testing.T) {
	flaky := &flakyDump{failures: 2}
	stream, err := startFlakyDump(t, flaky).Dump(NotIdempotent(testContext(t)), &rpc.DumpReq{AccountToken: testToken})
	require.NoError(t, err)
	_, err = stream.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.EqualValues(t, 1, flaky.attempts.Load())
}

func TestDumpRefusesADryRunValueTheServerDoesNotUnderstand(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)
	require.NoError(t, store(ctx, cache, testToken, "k", "v"))

	for value, want := range map[string]codes.Code{"yes": codes.InvalidArgument, "1": codes.OK} {
		stream, err := cache.Dump(metadata.AppendToOutgoingContext(ctx, dryRunHeader, value), &rpc.DumpReq{AccountToken: testToken})
		require.NoError(t, err)
		_, err = stream.Recv()
		assert.Equal(t, want, status.Code(err), "dry-run: %s: %v", value, err)
	}
}
