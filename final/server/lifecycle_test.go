package server_test

import (
	"context"
	"fmt"
	"grpcworkshop.example/final/rpc"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/server"
)

func TestGracefulShutdownReleasesTheReplicasSlotsAtOnce(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 2, tuneAccounts: func(c *server.AccountsConfig) { c.LeaseTTL = time.Hour }})
	ctx := testContext(t)
	c := cacheClient(t, st, tok)
	// Ring hash places keys by the replicas' random ports: store until both
	// replicas hold some (40 keys make a miss vanishingly unlikely).
	stored := int64(0)
	for i := 0; i < 40; i++ {
		require.NoError(t, store(ctx, c, fmt.Sprintf("k%d", i), "v"))
		stored++
		if i >= 5 && st.Caches[0].Service().Data().Len(tok) > 0 && st.Caches[1].Service().Data().Len(tok) > 0 {
			break
		}
	}
	ledger := st.Accounts.Service().Ledger()
	// A replica holds its keys and the spare slots of its last block.
	held := func(i int) int64 {
		d := st.Caches[i].Service().Data()
		return int64(d.Len(tok)) + d.Spare(tok)
	}
	require.EqualValues(t, held(0)+held(1), ledger.Held(tok))
	mine := int64(st.Caches[0].Service().Data().Len(tok))
	require.Positive(t, mine, "both replicas hold keys")
	require.Less(t, mine, stored, "both replicas hold keys")

	require.NoError(t, st.Caches[0].Shutdown(ctx))
	assert.Equal(t, held(1), ledger.Held(tok), "the stopped replica's slots are free now, not after the hour-long TTL")
}

// A stream a client keeps open (a health Watch, a Dump never read) holds
// the drain until the grace runs out; the replica is then cut off, and
// still gives its slots back at once: the release does not share the
// grace's spent deadline.
func TestShutdownCutOffByItsGraceStillReleasesTheSlots(t *testing.T) {
	st := startStack(t, stackOpts{tuneAccounts: func(c *server.AccountsConfig) { c.LeaseTTL = time.Hour }})
	ctx := testContext(t)
	c := cacheClient(t, st, tok)
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, store(ctx, c, k, "v"))
	}
	ledger := st.Accounts.Service().Ledger()
	d := st.Caches[0].Service().Data()
	require.EqualValues(t, int64(d.Len(tok))+d.Spare(tok), ledger.Held(tok))

	conn := dialTarget(t, st, st.Target(), tok, client.Options{})
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = w.Recv() // the stream is open on the replica
	require.NoError(t, err)

	grace, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, st.Caches[0].Shutdown(grace), context.DeadlineExceeded, "the open stream outlives the grace")
	assert.EqualValues(t, 0, ledger.Held(tok), "the slots are free now, not after the hour-long TTL")
}

// countLeases counts Accounts' Lease calls.
func countLeases(n *atomic.Int64) func(*server.AccountsConfig) {
	return func(c *server.AccountsConfig) {
		c.Unary = append(c.Unary, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if info.FullMethod == rpc.Accounts_Lease_FullMethodName {
				n.Add(1)
			}
			return h(ctx, req)
		})
	}
}

func TestAConstructedServerRunsNothingAndAFailedListenLeaksNothing(t *testing.T) {
	var leases atomic.Int64
	st := startStack(t, stackOpts{tuneAccounts: countLeases(&leases)})
	// Once a call succeeded, the stack's replica runs all it ever will.
	require.NoError(t, store(testContext(t), cacheClient(t, st, tok), "k", "v"))
	before := leases.Load()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	cfg := server.DefaultCacheConfig()
	cfg.Logger, cfg.ReplicaID = quiet, "never-served"
	cfg.Accounts.Addr, cfg.Accounts.TLS = st.AccountsAddr, mustClientTLS(t, st)
	cfg.Accounts.LeaseInterval = time.Millisecond // would report at once if anything ran
	cfg.Addr = taken.Addr().String()
	srv, err := server.NewCache(cfg)
	require.NoError(t, err)
	err = srv.Run(testContext(t))
	require.ErrorContains(t, err, "listen")
	srv.Stop()
	assert.Equal(t, before, leases.Load(), "nothing contacted Accounts")
}

// TestAnAccountsKeepaliveBelowGRPCsFloorStopsStartup: grpc-go would raise
// a keepalive time below 10s silently; the replica refuses it instead, as
// client.Dial does. Zero means "off" in every configuration of final, and
// keepalive to Accounts cannot be off: zero is refused too.
func TestAnAccountsKeepaliveBelowGRPCsFloorStopsStartup(t *testing.T) {
	for _, tc := range []struct {
		interval, timeout time.Duration
		want              string
	}{
		{5 * time.Second, time.Second, "accounts: keepalive time 5s is below gRPC's minimum of 10s"},
		{10 * time.Second, -time.Second, "accounts: keepalive time and timeout must be positive"},
		{0, 0, "keepalive cannot be turned off"},
	} {
		cfg := server.DefaultCacheConfig()
		cfg.Logger, cfg.ReplicaID = quiet, "never-served"
		cfg.Accounts.KeepaliveTime, cfg.Accounts.KeepaliveTimeout = tc.interval, tc.timeout
		_, err := server.NewCache(cfg)
		require.ErrorContains(t, err, tc.want)
	}
	cfg := server.DefaultCacheConfig()
	cfg.Logger, cfg.ReplicaID = quiet, "never-served"
	srv, err := server.NewCache(cfg)
	require.NoError(t, err)
	srv.Stop()
}
