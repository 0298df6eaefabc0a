package loadgen

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startRedis runs Debian's redis-server on a free loopback port, with no
// persistence, for the length of the test.
func startRedis(t *testing.T) string {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server)")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := lis.Addr().(*net.TCPAddr).Port
	require.NoError(t, lis.Close())
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		assert.NoError(ct, c.Ping(ctx).Err())
	}, 10*time.Second, 20*time.Millisecond, "redis-server answers")
	return addr
}

func TestTheSameLoopDrivesRedis(t *testing.T) {
	addr := startRedis(t)
	cfg := testConfig("", "mix")
	cfg.Addrs, cfg.Redis = nil, addr
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.Equal(t, "redis", res.Server)
	assert.EqualValues(t, 200, res.Total.Calls)
	assert.Empty(t, res.Total.Errors, "prefill stored every key, so every GET finds one")

	cfg.Op, cfg.Keys = "store", 0
	_, err = Run(testContext(t), cfg)
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.DBSize(ctx).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 10+200, n, "the 10 prefilled keys and 200 new ones")
}

func TestRedisMissIsNotFoundAndDumpIsRefused(t *testing.T) {
	addr := startRedis(t)
	cfg := testConfig("", "get")
	cfg.Addrs, cfg.Redis, cfg.Prefill, cfg.Keys = nil, addr, false, 1000000
	res, err := Run(testContext(t), cfg)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"NotFound": 200}, res.PerOp["get"].Errors)

	cfg.Op = "dump"
	_, err = Run(testContext(t), cfg)
	assert.ErrorContains(t, err, "not a Redis command")
}
