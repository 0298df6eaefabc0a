package server

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/forward"
)

// The unary and the stream chains come from one table: every link both
// have is in the same place relative to the others, and the token is
// judged before the replica names itself, the dry run is read or the
// tenant's rate is spent.
func TestUnaryAndStreamChainsHaveOneOrder(t *testing.T) {
	cfg := DefaultCacheConfig()
	cfg.ReplicaID = "r"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	authn := auth.NewAuthenticator(nil, auth.DefaultCacheConfig(), auth.Upstream{})
	fwd, err := forward.New(forward.Config{Peers: "127.0.0.1:1", ID: "r", Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { fwd.Close() })

	c := cacheChain(cfg, log, authn, fwd, cache.New(nil, "r", cache.Limits{}, log))
	unary, stream := c.names("unary"), c.names("stream")
	assert.Equal(t, slices.DeleteFunc(slices.Clone(unary), func(n string) bool { return n == "forward" || n == "batch-limits" }), stream,
		"streams run every link but forwarding and the batch limits, in the unary order")
	assert.Less(t, slices.Index(unary, "batch-limits"), slices.Index(unary, "forward"), "a batch over the limits is refused whole, before it is split")
	for _, later := range []string{"replica", "dry-run", "tenant-rate", "forward"} {
		assert.Less(t, slices.Index(unary, "auth"), slices.Index(unary, later), "auth before %s", later)
		assert.Less(t, slices.Index(unary, "deadline"), slices.Index(unary, later), "the deadline cap before %s", later)
	}
	assert.Less(t, slices.Index(unary, "forward"), slices.Index(unary, "replica"), "the owner names itself")
	assert.Len(t, c.unary(nil), len(unary))
	assert.Len(t, c.stream(nil), len(stream))
}
