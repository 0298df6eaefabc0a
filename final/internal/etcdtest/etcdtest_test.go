package etcdtest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Three members form a cluster; with its leader killed, the other two
// elect another and keep what was written; the old leader rejoins.
func TestAClusterSurvivesItsLeadersDeath(t *testing.T) {
	c := Start(t, 3)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cli.Put(ctx, "k", "v")
	require.NoError(t, err)
	leader, err := c.Leader(ctx)
	require.NoError(t, err)
	c.Members[leader].Kill()
	other := c.Members[(leader+1)%3]
	other.WaitReady(20 * time.Second)
	got, err := other.Client().Get(ctx, "k")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	assert.Equal(t, "v", string(got.Kvs[0].Value))
	next, err := c.Leader(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, leader, next, "a new leader")
	c.Members[leader].Start()
}
