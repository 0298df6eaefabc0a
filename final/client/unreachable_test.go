package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/client"
	"grpcworkshop/final/devstack"
	"grpcworkshop/final/rpc"
	"grpcworkshop/final/tlsutil"
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

// TestUnreachableReplicasKeysMoveToTheNextReplica: a replica that never
// answers holds its keys' calls only for the connect timeout; then ring
// hash sends them to the next replica, well within the calls' deadline.
// (With grpc-go's default of 20s every such call would time out.)
func TestUnreachableReplicasKeysMoveToTheNextReplica(t *testing.T) {
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0", "127.0.0.1:0"},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Directory:    accounts.Accounts(map[string]accounts.Account{"tok": {Tenant: "t", MaxCacheKeys: 1000}}),
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
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
