package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// readDump reads a whole streamed dump into a map, failing on a duplicate key.
func readDump(t *testing.T, cache rpc.CacheClient, token string) (map[string][]byte, error) {
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

	got, err := readDump(t, cache, testToken)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	theirs, err := readDump(t, cache, "other")
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"k1": []byte("theirs"), "only-theirs": []byte("theirs")}, theirs)
}

func TestDumpOfAnEmptyAccountEndsAtOnce(t *testing.T) {
	got, err := readDump(t, startCache(t), testToken)
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestDumpNeedsAKnownToken(t *testing.T) {
	cache := startCache(t)
	for _, token := range []string{"no-such-token", ""} {
		_, err := readDump(t, cache, token)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "token %q: %v", token, err)
	}
}

func TestDumpAllHasExactlyTheTenantsItemsInTheOrderStored(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)
	for _, key := range []string{"b", "a", "c"} {
		require.NoError(t, store(ctx, cache, testToken, key, "v"+key))
	}
	require.NoError(t, store(ctx, cache, testToken, "a", "overwritten"))
	require.NoError(t, store(ctx, cache, "other", "a", "theirs"))

	resp, err := cache.DumpAll(ctx, &rpc.DumpReq{AccountToken: testToken})
	require.NoError(t, err)
	var got []string
	for _, item := range resp.Items {
		got = append(got, item.Key+"="+string(item.Val))
	}
	assert.Equal(t, []string{"b=vb", "a=overwritten", "c=vc"}, got)

	_, err = cache.DumpAll(ctx, &rpc.DumpReq{AccountToken: "no-such-token"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "got %v", err)
}

func TestDumpAllOverTheMessageLimitFailsWhereTheStreamSucceeds(t *testing.T) {
	sys := startSystem(t)
	cfg := testClientConfig(t, sys.certs, sys.addr)

	// 6 MiB in all: more than the 4 MB a gRPC client accepts in one message.
	out, err := runClientCmd(t, cfg, "fill", "96", fmt.Sprint(64<<10))
	require.NoError(t, err)
	assert.Equal(t, "Stored 96 keys of 65536 bytes\n", out)

	out, err = runClientCmd(t, cfg, "dump-all")
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "got %v", err)
	assert.Contains(t, err.Error(), "received message larger than max")
	assert.Empty(t, out)

	out, err = runClientCmd(t, cfg, "dump")
	require.NoError(t, err)
	assert.Equal(t, 96, strings.Count(out, "=(65536 bytes)\n"), "every item, one line each")
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

	_, err := readDump(t, sys.cache, testToken)
	require.NoError(t, err)
	_, err = readDump(t, sys.cache, "no-such-token")
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
