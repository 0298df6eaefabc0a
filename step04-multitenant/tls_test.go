package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"grpcworkshop/step04-multitenant/rpc"
)

func TestTLSRoundTripVerifiesTheServer(t *testing.T) {
	cache := startCache(t)
	ctx := testContext(t)

	var p peer.Peer
	_, err := cache.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: []byte("con"), AccountToken: testToken}, grpc.Peer(&p))
	require.NoError(t, err)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	require.True(t, ok, "the call went over TLS, got %T", p.AuthInfo)
	assert.NotEmpty(t, info.State.VerifiedChains, "the client verified the server's certificate against the CA")

	resp, err := cache.Get(ctx, &rpc.GetReq{Key: "gopher", AccountToken: testToken})
	require.NoError(t, err)
	assert.Equal(t, "con", string(resp.Val))
}

func TestPlaintextClientIsRefused(t *testing.T) {
	addr := startSystem(t).addr
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	cache := rpc.NewCacheClient(conn)

	_, err = cache.Store(testContext(t), &rpc.StoreReq{Key: "gopher", Val: []byte("con"), AccountToken: testToken})
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)
}

func TestClientThatDoesNotTrustTheCAIsRefused(t *testing.T) {
	addr := startSystem(t).addr
	otherCA := devCerts(t) // a CA the server's certificate was not signed by
	cache := connect(t, testClientConfig(t, otherCA, addr))

	_, err := cache.Store(testContext(t), &rpc.StoreReq{Key: "gopher", Val: []byte("con"), AccountToken: testToken})
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")
}
