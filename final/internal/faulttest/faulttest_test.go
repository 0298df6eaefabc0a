package faulttest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/rpc"
)

func TestMain(m *testing.M) { faulttest.Main(m) }

func call(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// The harness itself: separate processes that store and read, survive a
// replica's kill -9 and restart (its keys are gone: the cache is memory),
// and a SIGSTOPped Accounts that comes back.
func TestHarnessRunsKillsPausesAndRestartsRealProcesses(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{Replicas: 2})
	c := s.Client("good")
	ctx, cancel := call(t)
	defer cancel()
	_, err := c.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err)
	got, err := c.Get(ctx, &rpc.GetReq{Key: "k"})
	require.NoError(t, err)
	assert.Equal(t, "v", string(got.GetVal()))

	for _, p := range s.Replicas {
		assert.Greater(t, p.RSS(), int64(1<<20), "a running Go server holds over 1 MB")
	}

	r := s.Replicas[0]
	pid := r.Pid()
	r.Restart()
	assert.NotEqual(t, pid, r.Pid(), "a new process")
	s.WaitServing(r, 10*time.Second)

	s.Accounts.Pause()
	s.Accounts.Resume()
	_, err = c.Store(ctx, &rpc.StoreReq{Key: "k2", Val: []byte("v")})
	require.NoError(t, err)

	s.Accounts.Kill()
	_, err = s.Client("nobody-known").Get(ctx, &rpc.GetReq{Key: "k"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "an unknown token with Accounts dead")
	s.Accounts.Start()

	require.NoError(t, s.Replicas[1].Terminate(10*time.Second), "SIGTERM drains and exits 0")
}

func metadataAuth(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}
