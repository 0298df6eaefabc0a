package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

func TestStoreThenGetOverVerifiedTLS(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)

	require.NoError(t, store(ctx, c, "gopher", "con"))
	got, err := get(ctx, c, "gopher")
	require.NoError(t, err)
	assert.Equal(t, "con", got)
}

func TestPlaintextAndUntrustedClientsAreRefused(t *testing.T) {
	st := startStack(t, stackOpts{})
	ctx := testContext(t)

	conn, err := grpc.NewClient(st.CacheAddrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	_, err = rpc.NewCacheClient(conn).Get(ctx, &rpc.GetReq{Key: "k"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "plaintext: %v", err)

	other := t.TempDir()
	require.NoError(t, tlsutil.WriteDevCerts(other, tlsutil.DefaultHosts))
	otherTLS, err := tlsutil.Dir(other).Client(false)
	require.NoError(t, err)
	conn2, err := client.Dial(st.CacheAddrs[0], client.Options{TLS: otherTLS, Token: tok})
	require.NoError(t, err)
	defer conn2.Close()
	_, err = rpc.NewCacheClient(conn2).Get(ctx, &rpc.GetReq{Key: "k"})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")
}

func TestAccountsRequiresAClientCertificate(t *testing.T) {
	st := startStack(t, stackOpts{})
	ctx := testContext(t)

	noCert, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	conn, err := grpc.NewClient(st.AccountsAddr, grpc.WithTransportCredentials(credentials.NewTLS(noCert)))
	require.NoError(t, err)
	defer conn.Close()
	_, err = rpc.NewAccountsClient(conn).GetByToken(ctx, &rpc.GetByTokenReq{Token: tok})
	assert.Equal(t, codes.Unavailable, status.Code(err), "a client without a certificate: %v", err)

	// The replicas, with their client certificate, are served.
	require.NoError(t, store(ctx, cacheClient(t, st, tok), "k", "v"))
}

func TestTokenTravelsAsBearerMetadata(t *testing.T) {
	st := startStack(t, stackOpts{})
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	conn, err := grpc.NewClient(st.CacheAddrs[0], grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	defer conn.Close()
	c := rpc.NewCacheClient(conn)
	ctx := testContext(t)

	for name, md := range map[string]metadata.MD{
		"missing":       nil,
		"not bearer":    metadata.Pairs("authorization", "Basic "+tok),
		"empty bearer":  metadata.Pairs("authorization", "Bearer "),
		"unknown token": metadata.Pairs("authorization", "Bearer nobody"),
		"two values":    metadata.Pairs("authorization", "Bearer "+tok, "authorization", "Bearer other"),
		"too long":      metadata.Pairs("authorization", "Bearer "+strings.Repeat("x", 1000)),
	} {
		mctx := metadata.NewOutgoingContext(ctx, md)
		_, err := c.Get(mctx, &rpc.GetReq{Key: "k"})
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", name, err)
		stream, err := c.Dump(mctx, &rpc.DumpReq{})
		if err == nil {
			_, err = stream.Recv()
		}
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "Dump, %s: %v", name, err)
	}
	good := metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok))
	_, err = c.Store(good, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	assert.NoError(t, err, "the server keeps serving")
}

func TestTenantsAreIsolated(t *testing.T) {
	st := startStack(t, stackOpts{})
	mine, theirs := cacheClient(t, st, tok), cacheClient(t, st, "other")
	ctx := testContext(t)

	require.NoError(t, store(ctx, mine, "shared-name", "mine"))
	_, err := get(ctx, theirs, "shared-name")
	assert.Equal(t, codes.NotFound, status.Code(err))
	require.NoError(t, store(ctx, theirs, "shared-name", "theirs"))
	got, err := get(ctx, mine, "shared-name")
	require.NoError(t, err)
	assert.Equal(t, "mine", got)
}

func quotaFailure(t *testing.T, err error) *errdetails.QuotaFailure {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			return q
		}
	}
	t.Fatalf("no QuotaFailure in %v", err)
	return nil
}

func TestOverQuotaIsFailedPreconditionWithQuotaFailure(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, "small")
	ctx := testContext(t)

	for i := range 3 {
		require.NoError(t, store(ctx, c, fmt.Sprint("k", i), "v"))
	}
	err := store(ctx, c, "one-too-many", "v")
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "max key limit 3")
	assert.Equal(t, "tenant:small", quotaFailure(t, err).Violations[0].Subject)

	require.NoError(t, store(ctx, c, "k1", "overwritten"), "an overwrite at the limit needs no slot")
}

func TestQuotaHoldsAcrossReplicasUnderConcurrentStores(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	ctx := testContext(t)

	// One client per replica, so Stores really land on different replicas.
	var clients []rpc.CacheClient
	for _, addr := range st.CacheAddrs {
		clients = append(clients, rpc.NewCacheClient(dialTarget(t, st, addr, "small", client.Options{})))
	}
	const racers = 60
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			err := store(ctx, clients[i%3], fmt.Sprint("racer-", i), "v")
			switch status.Code(err) {
			case codes.OK:
				ok.Add(1)
			case codes.FailedPrecondition:
				refused.Add(1)
			default:
				t.Errorf("unexpected: %v", err)
			}
		})
	}
	wg.Wait()
	assert.EqualValues(t, 3, ok.Load())
	assert.EqualValues(t, racers-3, refused.Load())
	total := 0
	for _, c := range st.Caches {
		total += c.Service().Data().Len("small")
	}
	assert.Equal(t, 3, total, "keys held across all replicas")
	assert.EqualValues(t, 3, st.Accounts.Service().Ledger().Held("small"))
}

func TestBadInputGetsAClearCodeAndTheServerKeepsServing(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, tok)
	// Each call has a deadline of its own: sending megabytes under -race on
	// a busy machine is slow, and one deadline for all of them would be a
	// race against the machine's speed.
	ctx := func() context.Context { return testContext(t) }

	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"empty key", store(ctx(), c, "", "v"), codes.InvalidArgument},
		{"empty key get", func() error { _, err := get(ctx(), c, ""); return err }(), codes.InvalidArgument},
		{"oversized key", store(ctx(), c, strings.Repeat("k", 257), "v"), codes.InvalidArgument},
		{"oversized value", store(ctx(), c, "k", strings.Repeat("v", 1<<20+1)), codes.InvalidArgument},
		{"value three times the limit", store(ctx(), c, "k", strings.Repeat("v", 3<<20)), codes.InvalidArgument},
		{"message over the transport limit", store(ctx(), c, "k", strings.Repeat("v", server.TransportLimit(cache.DefaultLimits()))), codes.ResourceExhausted},
		{"bad dry-run value", store(metadata.AppendToOutgoingContext(ctx(), client.DryRunHeader, "yes"), c, "k", "v"), codes.InvalidArgument},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, status.Code(tc.err), "%s: %v", tc.name, tc.err)
	}
	var br *errdetails.BadRequest
	for _, d := range status.Convert(cases[0].err).Details() {
		br, _ = d.(*errdetails.BadRequest)
	}
	require.NotNil(t, br, "InvalidArgument carries a BadRequest detail")
	assert.Equal(t, "key", br.FieldViolations[0].Field)

	require.NoError(t, store(ctx(), c, "k", "v"), "the server keeps serving")
}

func TestDryRunChangesNothingButChecksEverything(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, "small")
	ctx := testContext(t)
	dry := client.WithDryRun(ctx)

	require.NoError(t, store(dry, c, "k", "v"))
	_, err := get(ctx, c, "k")
	assert.Equal(t, codes.NotFound, status.Code(err), "a dry run stores nothing")
	assert.EqualValues(t, 0, st.Accounts.Service().Ledger().Held("small"), "and reserves nothing")

	for i := range 3 {
		require.NoError(t, store(ctx, c, fmt.Sprint("k", i), "v"))
	}
	assert.Equal(t, codes.FailedPrecondition, status.Code(store(dry, c, "new", "v")), "a dry run still checks the quota")
	require.NoError(t, store(dry, c, "k0", "changed"))
	got, err := get(ctx, c, "k0")
	require.NoError(t, err)
	assert.Equal(t, "v", got)
	assert.Equal(t, codes.Unauthenticated, status.Code(store(dry, cacheClient(t, st, "nobody"), "k", "v")), "and authenticates")
}
