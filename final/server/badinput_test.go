package server_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
)

// rawCodec sends pre-encoded request bytes as they are, as a client in a
// language that does not check UTF-8 may; it decodes nothing.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { return nil }
func (rawCodec) Name() string                       { return "proto" }

func rawRequest(key, val []byte) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, key)
	if val != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, val)
	}
	return b
}

// dumpErr runs a Dump to the end and returns how it ended (nil for io.EOF).
func dumpErr(ctx context.Context, c rpc.CacheClient) error {
	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func TestNonUTF8KeyIsInvalidArgumentAndStoresNothing(t *testing.T) {
	st := startStack(t, stackOpts{})
	conn := dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{})
	c := rpc.NewCacheClient(conn)
	ctx := testContext(t)

	bad := []byte{'k', 0xff, 0xfe}
	for name, call := range map[string]struct {
		method string
		req    []byte
	}{
		"Store": {rpc.Cache_Store_FullMethodName, rawRequest(bad, []byte("v"))},
		"Get":   {rpc.Cache_Get_FullMethodName, rawRequest(bad, nil)},
	} {
		err := conn.Invoke(ctx, call.method, call.req, new([]byte), grpc.ForceCodec(rawCodec{}))
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%s: %v", name, err)
	}
	assert.Zero(t, st.Caches[0].Service().Data().Len(tok), "nothing stored")
	require.NoError(t, dumpErr(ctx, c), "Dump still works")
	require.NoError(t, store(ctx, c, "k", "v"), "the server keeps serving")
}

func TestValuesUpToTheLimitAreStoredWhole(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)

	// The largest Store the limits allow fits under the receive limit.
	key, val := strings.Repeat("k", 256), strings.Repeat("v", 1<<20)
	require.NoError(t, store(ctx, c, key, val))
	got, err := get(ctx, c, key)
	require.NoError(t, err)
	assert.Equal(t, val, got)

	// Just over the value limit, or far over it: the same InvalidArgument;
	// only a message over the transport's limit is gRPC's ResourceExhausted.
	// The value is not touched.
	assert.Equal(t, codes.InvalidArgument, status.Code(store(ctx, c, key, val+"x")))
	assert.Equal(t, codes.InvalidArgument, status.Code(store(ctx, c, key, strings.Repeat("x", 1<<20+2048))))
	assert.Equal(t, codes.InvalidArgument, status.Code(store(ctx, c, key, strings.Repeat("x", 4<<20))))
	assert.Equal(t, codes.ResourceExhausted, status.Code(store(ctx, c, key, strings.Repeat("x", server.TransportLimit(cache.DefaultLimits())))))
	got, err = get(ctx, c, key)
	require.NoError(t, err)
	assert.Equal(t, val, got)
}

func TestBadDryRunValuesAreRefusedOnEveryMethod(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)
	require.NoError(t, store(ctx, c, "k", "v"))

	for _, vals := range [][]string{{"yes"}, {"true"}, {""}, {"01"}, {"1", "1"}, {"1", "0"}} {
		md := metadata.MD{}
		for _, v := range vals {
			md.Append(client.DryRunHeader, v)
		}
		bctx := metadata.NewOutgoingContext(ctx, md)
		assert.Equal(t, codes.InvalidArgument, status.Code(store(bctx, c, "k", "changed")), "Store, %q", vals)
		_, err := get(bctx, c, "k")
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "Get, %q", vals)
		assert.Equal(t, codes.InvalidArgument, status.Code(dumpErr(bctx, c)), "Dump, %q", vals)
	}
	got, err := get(ctx, c, "k")
	require.NoError(t, err)
	assert.Equal(t, "v", got, "nothing changed")
	require.NoError(t, dumpErr(client.WithDryRun(ctx), c), "a good dry-run value is fine on Dump")
}

func TestStoreOfANewKeyWhileAccountsIsDownStoresNothing(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)
	require.NoError(t, store(ctx, c, "k", "v"))

	st.Accounts.Stop()

	err := store(ctx, c, "new-key", "v")
	require.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
	_, err = get(ctx, c, "new-key")
	assert.Equal(t, codes.NotFound, status.Code(err), "nothing stored")
	assert.Equal(t, 1, st.Caches[0].Service().Data().Len(tok))
	assert.Equal(t, map[string]string{"k": "v"}, dumpAll(t, ctx, c), "the tenant's data is intact")
}

func TestBadRequestsLeaveEveryTenantsDataIntact(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.Sizes.DumpBatch = 1 }})
	mine, theirs := cacheClient(t, st, tok), cacheClient(t, st, "other")
	conn := dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{})
	ctx := testContext(t)
	want := map[string]string{}
	for i := range 5 {
		k := fmt.Sprint("k", i)
		want[k] = fmt.Sprint("v", i)
		require.NoError(t, store(ctx, mine, k, want[k]))
		require.NoError(t, store(ctx, theirs, k, want[k]))
	}

	bad := func(md ...string) context.Context { return metadata.AppendToOutgoingContext(ctx, md...) }
	for name, err := range map[string]error{
		"empty key":                   store(ctx, mine, "", "x"),
		"oversized key":               store(ctx, mine, strings.Repeat("k", 257), "x"),
		"oversized value":             store(ctx, mine, "k0", strings.Repeat("x", 1<<20+1)),
		"three times the value limit": store(ctx, mine, "k0", strings.Repeat("x", 3<<20)),
		"non-UTF-8 key": conn.Invoke(ctx, rpc.Cache_Store_FullMethodName,
			rawRequest([]byte("k0\xff"), []byte("x")), new([]byte), grpc.ForceCodec(rawCodec{})),
		"bad dry-run":   store(bad(client.DryRunHeader, "yes"), mine, "k0", "x"),
		"unknown token": store(ctx, cacheClient(t, st, "nobody"), "k0", "x"),
	} {
		assert.NotEqual(t, codes.OK, status.Code(err), name)
		assert.NotEqual(t, codes.Internal, status.Code(err), "%s: %v", name, err)
	}
	// A Dump abandoned half-way.
	dctx, cancel := context.WithCancel(ctx)
	stream, err := theirs.Dump(dctx, &rpc.DumpReq{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	cancel()

	assert.Equal(t, want, dumpAll(t, ctx, mine))
	assert.Equal(t, want, dumpAll(t, ctx, theirs))
}
