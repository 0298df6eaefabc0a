package loadgen

import (
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/tlsutil"
)

// TestAKeyReachesTheSameReplicaFromEveryTool stores keys with the load
// generator and asks final/client which replica serves each: it must be
// the one that holds it.
func TestAKeyReachesTheSameReplicaFromEveryTool(t *testing.T) {
	st, err := devstack.Start(devstack.Config{
		CertDir: t.TempDir(), AccountsAddr: "127.0.0.1:0",
		CacheAddrs: []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)

	const token, keys = "inconshreveable", 20
	cfg := Config{
		Addrs: st.CacheAddrs, Token: token, Creds: credentials.NewTLS(tlsCfg),
		HashHeader: keyaffinity.Header, ServiceConfig: keyaffinity.ServiceConfig,
		Op: "get", Prefill: true, Keys: keys, Count: 1, Concurrency: 1, Conns: 1, ValueSize: 1,
	}
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	require.Empty(t, res.Total.Errors)

	conn, err := client.Dial(st.Target(), client.Options{TLS: tlsCfg, Token: token})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := rpc.NewCacheClient(conn)
	byName := map[string]int{}
	for i := range st.Caches {
		byName["cache-"+strconv.Itoa(i+1)] = i
	}
	used := map[int]bool{}
	for i := range keys {
		key := "key-" + strconv.Itoa(i)
		var md metadata.MD
		_, err := c.Get(client.AskReplica(testContext(t)), &rpc.GetReq{Key: key}, grpc.Header(&md))
		require.NoError(t, err, "final/client finds %s where the load generator stored it", key)
		replica := byName[md.Get(client.ReplicaHeader)[0]]
		_, held := st.Caches[replica].Service().Data().Get(token, key)
		assert.True(t, held, key)
		used[replica] = true
	}
	assert.Len(t, used, 3, "the keys spread over every replica")
}
