package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"grpcworkshop/step09-structured-errors/rpc"
)

// The tests in this file build their requests from the wire format, with
// the field numbers of app.proto (StoreReq: key 1, val 2, account_token 3;
// GetReq: key 1, account_token 2), as a client generated from this step's
// proto sends them. So they also run against a server that predates
// account tokens: protobuf lets that server skip the fields it does not
// know, and it stores every key of every customer in one map.

func TestQuotaStopsACustomerThatCachesEverything(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)
	storeReq := func(token, key string) *rpc.StoreReq {
		var b []byte
		b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), key)
		b = protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), []byte("v"))
		b = protowire.AppendString(protowire.AppendTag(b, 3, protowire.BytesType), token)
		var req rpc.StoreReq
		require.NoError(t, proto.Unmarshal(b, &req))
		return &req
	}

	// The account "small" may keep 3 keys.
	for _, key := range []string{"k0", "k1", "k2"} {
		_, err := cache.Store(ctx, storeReq("small", key))
		require.NoError(t, err)
	}
	_, err := cache.Store(ctx, storeReq("small", "one-too-many"))
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "a fourth key for an account that may keep 3: %v", err)
}

func TestCustomersStoringTheSameKeyNameKeepTheirOwnValues(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)
	storeReq := func(token, key, val string) *rpc.StoreReq {
		var b []byte
		b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), key)
		b = protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), []byte(val))
		b = protowire.AppendString(protowire.AppendTag(b, 3, protowire.BytesType), token)
		var req rpc.StoreReq
		require.NoError(t, proto.Unmarshal(b, &req))
		return &req
	}
	getReq := func(token, key string) *rpc.GetReq {
		var b []byte
		b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), key)
		b = protowire.AppendString(protowire.AppendTag(b, 2, protowire.BytesType), token)
		var req rpc.GetReq
		require.NoError(t, proto.Unmarshal(b, &req))
		return &req
	}

	_, err := cache.Store(ctx, storeReq("inconshreveable", "shared-name", "mine"))
	require.NoError(t, err)
	_, err = cache.Store(ctx, storeReq("other", "shared-name", "theirs"))
	require.NoError(t, err)
	resp, err := cache.Get(ctx, getReq("inconshreveable", "shared-name"))
	require.NoError(t, err)
	assert.Equal(t, "mine", string(resp.Val), "another customer's Store of the same key name overwrote mine")
}
