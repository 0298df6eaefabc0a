package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/internal/dnstest"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// storeAll stores every key and reports which replica took each.
func storeAll(ctx context.Context, c rpc.CacheClient, keys []string, val string) (map[string]string, error) {
	owner := map[string]string{}
	for _, k := range keys {
		var hdr metadata.MD
		if _, err := c.Store(client.AskReplica(ctx), &rpc.StoreReq{Key: k, Val: []byte(val)}, grpc.Header(&hdr)); err != nil {
			return nil, fmt.Errorf("store %s: %w", k, err)
		}
		owner[k] = hdr.Get(client.ReplicaHeader)[0]
	}
	return owner, nil
}

func replicasOf(owner map[string]string) []string {
	var rs []string
	for _, r := range owner {
		if !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	}
	slices.Sort(rs)
	return rs
}

// TestDNSDiscoverySpreadsKeysAndFollowsTheAnswer: a client given
// dns://SERVER/cache.test:PORT finds every replica the name resolves to,
// ring hash spreads keys over them and finds each again; when the answer
// changes (a replica removed, one added), the client follows once its
// connections reach their maximum age. The replicas reach Accounts
// through DNS too, and every name is checked against the certificates.
func TestDNSDiscoverySpreadsKeysAndFollowsTheAnswer(t *testing.T) {
	ns := dnstest.Start(t)
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	port := dnstest.FreePortOn(t, append(ips, "127.0.0.6")...) // .6: Accounts
	var addrs []string
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(port)))
	}

	// Certificates for the names, not the addresses: what a client checks.
	certs := t.TempDir()
	require.NoError(t, tlsutil.WriteDevCerts(certs, []string{"cache.test", "accounts.test"}))
	const maxAge = 500 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := devstack.Start(devstack.Config{
		CertDir:      certs,
		AccountsAddr: "127.0.0.6:0",
		CacheAddrs:   addrs,
		Logger:       log,
		Directory:    accounts.Accounts(map[string]accounts.Account{"tok": {Tenant: "t", MaxCacheKeys: 10_000}}),
		TuneCache: func(_ int, c *server.CacheConfig) {
			_, accPort, err := net.SplitHostPort(c.Accounts.Addr)
			if err == nil {
				c.Accounts.Addr = "dns://" + ns.Addr + "/accounts.test:" + accPort
			}
			c.MaxConnectionAge = maxAge
			// Peers by name too, as in a deployment: the certificates
			// name the service, not the addresses.
			c.Peers.Addrs = "dns://" + ns.Addr + "/cache.test:" + strconv.Itoa(port)
		},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	ns.Set("accounts.test", "127.0.0.6")
	ns.Set("cache.test", ips[:3]...) // cache-4 runs, but DNS does not name it yet

	tlsCfg, err := tlsutil.ClientConfig(filepath.Join(certs, tlsutil.CAFile), "", "")
	require.NoError(t, err)
	target := "dns://" + ns.Addr + "/cache.test:" + strconv.Itoa(port)
	conn, err := client.Dial(target, client.Options{TLS: tlsCfg, Token: "tok"})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := rpc.NewCacheClient(conn)

	keys := make([]string, 60)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%02d", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner, err := storeAll(ctx, c, keys, "v1")
	require.NoError(t, err)
	assert.Equal(t, []string{"cache-1", "cache-2", "cache-3"}, replicasOf(owner), "keys spread over every replica DNS names")
	for _, k := range keys {
		var hdr metadata.MD
		resp, err := c.Get(client.AskReplica(ctx), &rpc.GetReq{Key: k}, grpc.Header(&hdr))
		require.NoError(t, err, "get %s", k)
		assert.Equal(t, "v1", string(resp.Val))
		assert.Equal(t, owner[k], hdr.Get(client.ReplicaHeader)[0], "get %s reaches the replica that stored it", k)
	}

	// Dump must reach every replica: Replicas asks the same DNS server.
	replicas, serverName, err := client.Replicas(ctx, target)
	require.NoError(t, err)
	assert.ElementsMatch(t, addrs[:3], replicas)
	assert.Equal(t, "cache.test", serverName, "the name the certificates are checked against")

	// Scale: cache-1 leaves DNS (it keeps running, as a pod does while it
	// drains), cache-4 joins. Nothing tells the client but its connections
	// ending at their maximum age, after which it resolves again.
	ns.Set("cache.test", ips[1:]...)
	changed := time.Now()
	// Until the client is connected to cache-4, its keys go to the next
	// replica on the ring (failover), so a pass that reaches all three
	// may still have stored some keys there: the move is done when two
	// passes in a row put every key on the same replica.
	var after, prev map[string]string
	require.Eventually(t, func() bool {
		prev, after = after, nil
		after, err = storeAll(ctx, c, keys, "v2")
		return err == nil && slices.Equal(replicasOf(after), []string{"cache-2", "cache-3", "cache-4"}) && maps.Equal(prev, after)
	}, 20*time.Second, 50*time.Millisecond, "the client moves to the new DNS answer (last: %v, %v)", replicasOf(after), err)
	t.Logf("followed the DNS change in %s (max connection age %s, minimum resolution interval 100ms: TestMain)",
		time.Since(changed).Round(10*time.Millisecond), maxAge)
	moved := 0
	for _, k := range keys {
		var hdr metadata.MD
		resp, err := c.Get(client.AskReplica(ctx), &rpc.GetReq{Key: k}, grpc.Header(&hdr))
		require.NoError(t, err, "get %s", k)
		assert.Equal(t, "v2", string(resp.Val))
		assert.Equal(t, after[k], hdr.Get(client.ReplicaHeader)[0])
		if owner[k] != after[k] {
			moved++
			// Consistent hashing: a key moves only off the replica that left
			// or onto the one that came; the rest stay (and keep hitting).
			assert.True(t, owner[k] == "cache-1" || after[k] == "cache-4", "%s moved from %s to %s", k, owner[k], after[k])
		}
	}
	t.Logf("%d of %d keys changed replica", moved, len(keys))
	replicas, _, err = client.Replicas(ctx, target)
	require.NoError(t, err)
	assert.ElementsMatch(t, addrs[1:], replicas)
}
