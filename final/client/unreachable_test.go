package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// blackHole accepts connections and never answers, as a replica behind a
// cut cable or on a dead node looks to a client: nothing is refused.
func blackHole(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// startTwoReplicas runs Accounts and two replicas on loopback, for the
// token "tok".
func startTwoReplicas(t *testing.T, tune func(int, *server.CacheConfig)) *devstack.Stack {
	t.Helper()
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0", "127.0.0.1:0"},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Directory:    accounts.Accounts(map[string]accounts.Account{"tok": {Tenant: "t", MaxCacheKeys: 1000}}),
		TuneCache:    tune,
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	return st
}

// TestUnreachableReplicasKeysMoveToTheNextReplica: a replica that never
// answers holds its keys' calls only for the connect timeout; then ring
// hash sends them to the next replica, well within the calls' deadline.
// (With grpc-go's default of 20s every such call would time out.)
func TestUnreachableReplicasKeysMoveToTheNextReplica(t *testing.T) {
	st := startTwoReplicas(t, nil)
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	hole := blackHole(t)
	conn, err := client.Dial(st.Target()+","+hole, client.Options{TLS: tlsCfg, Token: "tok", ConnectTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := rpc.NewCacheClient(conn)

	owners := map[string]int{}
	for i := range 30 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		k := fmt.Sprintf("key-%02d", i)
		owner, err := storeAll(ctx, c, []string{k}, "v")
		cancel()
		require.NoError(t, err, "store %s: a third of the keys hash to the black hole", k)
		owners[owner[k]]++
	}
	assert.Len(t, owners, 2, "every key is on one of the two live replicas: %v", owners)
}

// TestKeysOfAReplicaCutOffOverAnOpenConnectionMoveWithinTheKeepalive: a
// replica the client already talks to is cut off (its cable pulled: the
// connection stays open, nothing arrives, nothing is refused). The
// client's keepalive notices within its time and timeout, the connection
// is closed, and ring hash sends the replica's keys to the next one: a Get
// misses there, a Store lands there, instead of every call for those keys
// waiting out its deadline. With the former keepalive (30s, 10s) this
// took up to 40s.
func TestKeysOfAReplicaCutOffOverAnOpenConnectionMoveWithinTheKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive to notice the cut: about 12s")
	}
	t.Parallel()
	// No forwarding: the next replica answers for itself.
	st := startTwoReplicas(t, func(_ int, c *server.CacheConfig) { c.Peers.Addrs = "" })
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	cable := faulttest.NewCable(t, st.CacheAddrs[1])
	target := []string{st.CacheAddrs[0], cable.Addr()}
	// gRPC's first reconnect backoff (1s) is the shortest attempt anyway.
	const connectTimeout = time.Second
	conn, err := client.Dial(strings.Join(target, ","), client.Options{TLS: tlsCfg, Token: "tok", ConnectTimeout: connectTimeout})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := rpc.NewCacheClient(conn)

	ring := keyaffinity.NewRing(target)
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprint("key-", i); ring.Owner(k) == cable.Addr() {
			key = k
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	owner, err := storeAll(ctx, c, []string{key}, "v")
	require.NoError(t, err)
	require.Equal(t, "cache-2", owner[key], "the key's owner is behind the cable")

	cut := time.Now()
	cable.Cut()
	// The connection goes quiet now: a ping after KeepaliveTime, closed
	// KeepaliveTimeout later; then a connection attempt fails after
	// connectTimeout and ring hash walks on. Two seconds more for the
	// retry's backoff and a busy machine.
	bound := client.DefaultKeepaliveTime + client.DefaultKeepaliveTimeout + connectTimeout + 2*time.Second
	took := faulttest.AwaitMiss(t, cut, bound, func(ctx context.Context) error {
		_, err := c.Get(ctx, &rpc.GetReq{Key: key})
		return err
	})
	t.Logf("a Get of the cut replica's key missed on the next replica %s after the cut (bound %s)", took.Round(time.Millisecond), bound)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	owner, err = storeAll(ctx, c, []string{key}, "v2")
	require.NoError(t, err)
	assert.Equal(t, "cache-1", owner[key], "a Store of the cut replica's key lands on the next replica")
}
