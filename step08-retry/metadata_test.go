package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// withDryRunValue sends the dry-run header with exactly these values.
func withDryRunValue(ctx context.Context, vals ...string) context.Context {
	for _, v := range vals {
		ctx = metadata.AppendToOutgoingContext(ctx, dryRunHeader, v)
	}
	return ctx
}

func TestDryRunLeavesTheStoreAndTheCountsUnchanged(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)
	dry := withDryRun(ctx)

	require.NoError(t, store(ctx, sys.cache, "small", "k1", "real"))
	require.NoError(t, store(ctx, sys.cache, "small", "k2", "real"))

	require.NoError(t, store(dry, sys.cache, "small", "k1", "dry"), "overwrite")
	for i := range 5 { // more new keys than the quota has room for: none is counted
		require.NoError(t, store(dry, sys.cache, "small", fmt.Sprint("new", i), "dry"), "new key")
	}

	got, err := get(ctx, sys.cache, "small", "k1")
	require.NoError(t, err)
	assert.Equal(t, "real", got)
	_, err = get(ctx, sys.cache, "small", "new0")
	assert.Equal(t, codes.NotFound, status.Code(err))

	// The last slot is still free for a real Store.
	require.NoError(t, store(ctx, sys.cache, "small", "k3", "real"))
	assert.Equal(t, codes.FailedPrecondition, status.Code(store(ctx, sys.cache, "small", "k4", "real")))
}

func TestDryRunChecksAndFailsLikeARealStore(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)
	dry := withDryRun(ctx)

	for i := range 3 {
		require.NoError(t, store(ctx, sys.cache, "small", fmt.Sprint("k", i), "v"))
	}
	for name, call := range map[string]func(context.Context) error{
		"over the quota": func(ctx context.Context) error { return store(ctx, sys.cache, "small", "one-too-many", "v") },
		"unknown token":  func(ctx context.Context) error { return store(ctx, sys.cache, "no-such-token", "k", "v") },
		"empty key":      func(ctx context.Context) error { return store(ctx, sys.cache, "small", "", "v") },
	} {
		realErr, dryErr := call(ctx), call(dry)
		require.Error(t, realErr, name)
		assert.Equal(t, status.Convert(realErr).Proto(), status.Convert(dryErr).Proto(), "%s: a dry run reports what a real Store reports", name)
	}
	assert.Equal(t, codes.FailedPrecondition, status.Code(store(dry, sys.cache, "small", "one-too-many", "v")))
	assert.NoError(t, store(dry, sys.cache, "small", "k1", "v"), "overwriting at the quota passes, as for real")
}

func TestDryRunValueTheServerDoesNotUnderstandIsInvalidArgument(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	for _, vals := range [][]string{{"yes"}, {"2"}, {""}, {"TRUE"}, {"1", "0"}} {
		bad := withDryRunValue(ctx, vals...)
		err := store(bad, sys.cache, testToken, "k", "v")
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "Store with dry-run %q: %v", vals, err)
		assert.Contains(t, status.Convert(err).Message(), "dry-run")
		_, err = get(bad, sys.cache, testToken, "k")
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "Get with dry-run %q: %v", vals, err)
	}
	_, err := get(ctx, sys.cache, testToken, "k")
	assert.Equal(t, codes.NotFound, status.Code(err), "a refused header is not a real write")
}

func TestDryRunHeaderValues(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	for _, v := range []string{"1", "true"} {
		require.NoError(t, store(withDryRunValue(ctx, v), sys.cache, testToken, "dry-"+v, "v"))
		_, err := get(ctx, sys.cache, testToken, "dry-"+v)
		assert.Equal(t, codes.NotFound, status.Code(err), "dry-run: %s is a dry run", v)
	}
	for _, v := range []string{"0", "false"} {
		require.NoError(t, store(withDryRunValue(ctx, v), sys.cache, testToken, "real-"+v, "v"))
		_, err := get(ctx, sys.cache, testToken, "real-"+v)
		assert.NoError(t, err, "dry-run: %s is a real Store", v)
	}
}

func TestClientCommandDryRunStoresNothing(t *testing.T) {
	sys := startSystem(t)
	cfg := testClientConfig(t, sys.certs, sys.addr)
	cfg.dryRun = true

	out, err := runClientCmd(t, cfg, "store", "k", "v")
	require.NoError(t, err)
	assert.Equal(t, "Dry run: would store k\n", out)
	_, err = get(testContext(t), sys.cache, testToken, "k")
	assert.Equal(t, codes.NotFound, status.Code(err))
}

func TestDryRunHeaderStoresNothing(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	// The header as any client, in any language, would send it.
	require.NoError(t, store(metadata.AppendToOutgoingContext(ctx, "dry-run", "1"), sys.cache, testToken, "k", "v"))
	_, err := get(ctx, sys.cache, testToken, "k")
	assert.Equal(t, codes.NotFound, status.Code(err), "got %v", err)
}
