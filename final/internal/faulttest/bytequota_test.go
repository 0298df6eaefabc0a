package faulttest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/rpc"
)

// Issue 24 item 5: the quota counted keys, not bytes, so a tenant steering
// its Stores to one replica (dialing it, or x-forwarded-by past a
// forwarding one) pinned up to max_cache_keys MiB there. With
// max_cache_bytes, its bytes across all three replicas never pass the
// cap, the refusal's QuotaFailure names max_cache_bytes, and bytes freed
// by overwrites with empty values are usable again on another replica.
func TestByteQuotaHoldsAcrossReplicasAgainstOneSteeredReplica(t *testing.T) {
	const capBytes = 4 << 20
	s := faulttest.Start(t, faulttest.Options{
		Replicas: 3,
		Accounts: map[string]faulttest.Account{"b": {Tenant: "b", MaxCacheKeys: 1000, MaxCacheBytes: capBytes}},
		CacheArgs: func(int) []string {
			return []string{"-lease-interval", "1s", "-rate", "0", "-tenant-rate", "0"}
		},
	})
	replica := func(i int) rpc.CacheClient {
		return rpc.NewCacheClient(s.Dial(s.Replicas[i].Addr, "b", client.Options{}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	val := make([]byte, 512<<10)
	one := replica(0)
	stored := 0
	var refusal error
	for i := range 1000 { // the key quota alone would let all of them in
		_, err := one.Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("k", i), Val: val})
		if err != nil {
			refusal = err
			break
		}
		stored++
	}
	require.Error(t, refusal, "a tenant pins no more than max_cache_bytes on one replica")
	itemSize := len("k0") + len(val)
	assert.LessOrEqual(t, stored*itemSize, capBytes)
	assert.Greater(t, (stored+1)*itemSize, capBytes-itemSize, "the byte cap, not something smaller, refused it")
	st := status.Convert(refusal)
	assert.Equal(t, codes.FailedPrecondition, st.Code(), "%v", refusal)
	var qf *errdetails.QuotaFailure
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			qf = q
		}
	}
	require.NotNil(t, qf, "a QuotaFailure detail: %v", st.Details())
	require.Len(t, qf.GetViolations(), 1)
	v := qf.GetViolations()[0]
	assert.Equal(t, "max_cache_bytes", v.GetQuotaId())
	assert.Equal(t, "tenant:b", v.GetSubject())
	assert.Equal(t, fmt.Sprintf("at most %d bytes across all replicas", capBytes), v.GetDescription())

	for i := 1; i < 3; i++ {
		_, err := replica(i).Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("other", i), Val: val})
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "replica %d holds none of the bytes either: %v", i+1, err)
	}

	// Overwriting the keys with empty values frees their bytes; replica 1
	// gives them back with its next report, and replica 2 may use them.
	for i := range stored {
		_, err := one.Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("k", i)})
		require.NoError(t, err)
	}
	two := replica(1)
	moved := 0
	for moved < stored-1 {
		_, err := two.Store(ctx, &rpc.StoreReq{Key: fmt.Sprint("two", moved), Val: val})
		switch {
		case err == nil:
			moved++
		case status.Code(err) == codes.FailedPrecondition && ctx.Err() == nil:
			select { // replica 1 has not reported yet: its next report frees them
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		default:
			require.NoError(t, err, "after %d of %d", moved, stored-1)
		}
	}
	total := 0
	for k, v := range replicaKeys(t, s, "b") {
		total += len(k) + len(v)
	}
	assert.LessOrEqual(t, total, capBytes, "bytes across all replicas")
}
