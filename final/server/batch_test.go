package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
)

// batcher is the Go client's batching over every replica of st, split by
// the ring.
func batcher(t *testing.T, st *devstack.Stack, token string, o client.Options) *client.Batcher {
	o.Ring = client.NewRing()
	return client.NewBatcher(dialTarget(t, st, st.Target(), token, o), o.Ring)
}

func items(keys ...string) []*rpc.StoreManyItem {
	out := make([]*rpc.StoreManyItem, len(keys))
	for i, k := range keys {
		out[i] = &rpc.StoreManyItem{Key: k, Val: []byte("v-" + k)}
	}
	return out
}

func keysN(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(prefix, i)
	}
	return keys
}

// itemReason is the ErrorInfo reason of an item's status; "" when the
// item succeeded.
func itemReason(st *spb.Status) fault.Reason {
	if st == nil {
		return ""
	}
	return apierr.ReasonOf(status.FromProto(st).Err())
}

func storedKeys(st *devstack.Stack, token string) int {
	n := 0
	for _, c := range st.Caches {
		n += c.Service().Data().Len(token)
	}
	return n
}

func TestABatchOverQuotaStoresWhatFitsAndSaysWhichKeysDidNot(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	b := batcher(t, st, "small", client.Options{}) // at most 3 keys
	ctx := testContext(t)

	resp, err := b.StoreMany(ctx, items("a", "b"))
	require.NoError(t, err)
	resp, err = b.StoreMany(ctx, items("a", "c", "d", "e", ""))
	require.NoError(t, err, "a batch partly refused is answered, not failed")
	require.Len(t, resp.Results, 5)
	var stored, over []string
	for _, r := range resp.Results[:4] {
		switch itemReason(r.Error) {
		case "":
			stored = append(stored, r.Key)
		case fault.QuotaExceeded:
			over = append(over, r.Key)
			s := status.FromProto(r.Error)
			assert.Equal(t, codes.FailedPrecondition, s.Code(), "as a unary Store's")
			var qf *errdetails.QuotaFailure
			for _, d := range s.Details() {
				if q, ok := d.(*errdetails.QuotaFailure); ok {
					qf = q
				}
			}
			assert.NotNil(t, qf, "with its QuotaFailure")
		default:
			t.Errorf("key %q: %v", r.Key, status.FromProto(r.Error).Err())
		}
	}
	assert.Contains(t, stored, "a", "an overwrite needs no slot")
	assert.Len(t, stored, 2, "the overwrite and one new key fit")
	assert.Len(t, over, 2, "the other two new keys are over the quota")
	assert.Equal(t, fault.InvalidArgument, itemReason(resp.Results[4].Error), "an empty key is refused on its own")
	assert.Equal(t, 3, storedKeys(st, "small"))

	got, err := b.GetMany(ctx, []string{"a", "b", "zzz"})
	require.NoError(t, err)
	assert.Equal(t, "v-a", string(got.Results[0].Val))
	assert.Equal(t, "v-b", string(got.Results[1].Val))
	assert.Equal(t, fault.KeyNotFound, itemReason(got.Results[2].Error))
	assert.Equal(t, "zzz", got.Results[2].Key)
}

func TestABatchFromAClientThatDoesNotRouteByKeyReachesEveryOwner(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	ctx := testContext(t)
	keys := keysN("batch-", 60)

	// One replica receives the whole batch and forwards the other owners'
	// keys, one call each.
	first := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{}))
	resp, err := first.StoreMany(ctx, &rpc.StoreManyRequest{Items: items(keys...)})
	require.NoError(t, err)
	for _, r := range resp.Results {
		assert.Nil(t, r.Error, r.Key)
	}
	assert.Equal(t, 60, storedKeys(st, tok), "each key stored once, on its owner")
	for i, c := range st.Caches {
		assert.Positive(t, c.Service().Data().Len(tok), "replica %d owns some", i+1)
	}
	assert.EqualValues(t, 2, forwardedCalls(st), "one hop per other owner")

	for i, addr := range st.CacheAddrs {
		one := rpc.NewCacheClient(dialTarget(t, st, addr, tok, client.Options{}))
		got, err := one.GetMany(ctx, &rpc.GetManyRequest{Keys: append([]string{"missing"}, keys...)})
		require.NoError(t, err)
		require.Len(t, got.Results, 61)
		assert.Equal(t, codes.NotFound, status.FromProto(got.Results[0].Error).Code())
		for j, k := range keys {
			assert.Equal(t, k, got.Results[j+1].Key, "in the order asked, through replica %d", i+1)
			assert.Equal(t, "v-"+k, string(got.Results[j+1].Val))
		}
	}

	// The Go client splits by owner itself: no hop.
	before := forwardedCalls(st)
	b := batcher(t, st, tok, client.Options{})
	got, err := b.GetMany(ctx, keys)
	require.NoError(t, err)
	for j, k := range keys {
		assert.Equal(t, "v-"+k, string(got.Results[j].Val))
	}
	_, err = b.StoreMany(ctx, items(keys...))
	require.NoError(t, err)
	assert.Equal(t, before, forwardedCalls(st), "the ring-splitting client pays no hop")
}

func TestADryRunBatchChangesNothing(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	b := batcher(t, st, "small", client.Options{})
	ctx := testContext(t)
	_, err := b.StoreMany(ctx, items("a", "b", "c"))
	require.NoError(t, err)

	resp, err := b.StoreMany(client.WithDryRun(ctx), []*rpc.StoreManyItem{
		{Key: "a", Val: []byte("new")}, {Key: "d"}, {Key: strings.Repeat("k", 300)},
	})
	require.NoError(t, err)
	assert.Nil(t, resp.Results[0].Error, "an overwrite would be stored")
	assert.Equal(t, fault.QuotaExceeded, itemReason(resp.Results[1].Error), "a new key would be over the quota")
	assert.Equal(t, fault.InvalidArgument, itemReason(resp.Results[2].Error))

	got, err := b.GetMany(ctx, []string{"a", "d"})
	require.NoError(t, err)
	assert.Equal(t, "v-a", string(got.Results[0].Val), "the dry run changed nothing")
	assert.Equal(t, fault.KeyNotFound, itemReason(got.Results[1].Error))
	assert.Equal(t, 3, storedKeys(st, "small"))
}

func TestBatchLimitsAuthAndTheTenantRatePerKey(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) {
		c.Limits.Sizes.MaxBatchKeys, c.Limits.Sizes.MaxBatchBytes = 8, 1000
		c.Limits.TenantRate, c.Limits.TenantBurst = 1, 10
	}})
	ctx := testContext(t)
	c := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, client.Options{Retry: retryOnce}))

	_, err := c.GetMany(ctx, &rpc.GetManyRequest{Keys: keysN("k", 9)})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "9 keys, over the limit of 8: %v", err)
	assert.Contains(t, status.Convert(err).Message(), "split it")
	_, err = c.StoreMany(ctx, &rpc.StoreManyRequest{Items: []*rpc.StoreManyItem{{Key: "k", Val: make([]byte, 1000)}}})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "1001 bytes, over the limit of 1000: %v", err)
	_, err = c.StoreMany(ctx, &rpc.StoreManyRequest{Items: []*rpc.StoreManyItem{{Key: "k", Val: make([]byte, server.TransportLimit(st.Caches[0].Service().Limits()))}}})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "over what the replica reads at all")

	anon := rpc.NewCacheClient(dialTarget(t, st, st.Target(), "", client.Options{}))
	_, err = anon.GetMany(ctx, &rpc.GetManyRequest{Keys: []string{"k"}})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))

	// The tenant's rate counts keys: a burst of 10 allows one batch of 8,
	// not two.
	_, err = c.GetMany(ctx, &rpc.GetManyRequest{Keys: keysN("k", 8)})
	require.NoError(t, err)
	_, err = c.GetMany(ctx, &rpc.GetManyRequest{Keys: keysN("k", 8)})
	assert.Equal(t, fault.RateLimited, apierr.ReasonOf(err), "%v", err)
	_, ok := apierr.RetryDelay(err)
	assert.True(t, ok, "with a RetryInfo")
}

func TestBatchesOverRESTAndJSON(t *testing.T) {
	st := startWithHTTP(t)
	ctx := testContext(t)
	post := func(path, body string, msg proto.Message) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.WebURLs[0]+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		if resp.StatusCode == http.StatusOK {
			require.NoError(t, protojson.Unmarshal(b, msg), string(b))
		}
		return resp.StatusCode
	}
	var stored rpc.StoreManyResponse
	require.Equal(t, http.StatusOK, post("/v1/keys:storeMany", `{"items":[{"key":"a","val":"QQ=="},{"key":"","val":""}]}`, &stored))
	require.Len(t, stored.Results, 2)
	assert.Nil(t, stored.Results[0].Error)
	assert.Equal(t, int32(codes.InvalidArgument), stored.Results[1].Error.GetCode())

	var got rpc.GetManyResponse
	require.Equal(t, http.StatusOK, post("/v1/keys:getMany", `{"keys":["a","b"]}`, &got))
	require.Len(t, got.Results, 2)
	assert.Equal(t, "A", string(got.Results[0].Val))
	assert.Equal(t, int32(codes.NotFound), got.Results[1].Error.GetCode())
	assert.Equal(t, http.StatusBadRequest, post("/v1/keys:getMany", `{"keys":[`+strings.Repeat(`"k",`, 300)+`"k"]}`, &got), "over the batch limit")
}
