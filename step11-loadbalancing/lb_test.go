package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// replicas are cache servers sharing one Accounts service, as in a
// deployment of several replicas.
type replicas struct {
	certs  string
	addrs  []string
	byAddr map[string]*testSystem
}

func startReplicas(t *testing.T, n int) *replicas {
	t.Helper()
	certs := devCerts(t)
	accountsAddr := serveAccounts(t, certs, NewAccountsService(testAccounts, 0), new(logCapture).logger())
	r := &replicas{certs: certs, byAddr: make(map[string]*testSystem)}
	for range n {
		sys := startCacheWithAccounts(t, certs, accountsAddr, testAccountsTimeout, testAttempts)
		r.addrs = append(r.addrs, sys.addr)
		r.byAddr[sys.addr] = sys
	}
	return r
}

// client dials every replica as runClient does, with policy, and no
// retries, so that every failure shows.
func (r *replicas) client(t *testing.T, policy string) rpc.CacheClient {
	t.Helper()
	conn, err := dialReplicas(r.addrs, policy, grpc.WithTransportCredentials(clientTLS(t, r.certs)),
		grpc.WithChainUnaryInterceptor(retryUnary(testAttempts, time.Millisecond, 10*time.Millisecond), keyAffinityUnary))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return rpc.NewCacheClient(conn)
}

// holder returns the replica that holds key for testToken, or "".
func (r *replicas) holder(t *testing.T, key string) string {
	t.Helper()
	var found []string
	for addr, sys := range r.byAddr {
		sys.svc.mu.RLock()
		_, ok := sys.svc.store[testToken][key]
		sys.svc.mu.RUnlock()
		if ok {
			found = append(found, addr)
		}
	}
	require.LessOrEqual(t, len(found), 1, "key %q is on several replicas: %v", key, found)
	if len(found) == 0 {
		return ""
	}
	return found[0]
}

// getFrom makes a Get and returns the replica that answered, whatever the outcome.
func getFrom(t *testing.T, cache rpc.CacheClient, key string) (string, error) {
	t.Helper()
	var header metadata.MD
	resp, err := cache.Get(testContext(t), &rpc.GetReq{Key: key, AccountToken: testToken}, grpc.Header(&header))
	if err == nil {
		assert.Equal(t, "v-"+key, string(resp.Val))
	}
	return replicaOf(header), err
}

func TestRoundRobinUsesEveryReplicaButMissesKeysStoredOnAnother(t *testing.T) {
	r := startReplicas(t, 3)
	cache := r.client(t, "round_robin")
	ctx := testContext(t)
	require.NoError(t, store(ctx, cache, testToken, "k", "v-k"))
	holder := r.holder(t, "k")
	require.NotEmpty(t, holder)

	// Round robin takes each replica in turn, once it is connected; the
	// test's deadline bounds the wait for all three.
	seen := make(map[string]codes.Code)
	for len(seen) < len(r.addrs) {
		replica, err := getFrom(t, cache, "k")
		require.Contains(t, []codes.Code{codes.OK, codes.NotFound}, status.Code(err), "got %v", err)
		seen[replica] = status.Code(err)
	}
	assert.ElementsMatch(t, r.addrs, keys(seen))
	for replica, code := range seen {
		if replica == holder {
			assert.Equal(t, codes.OK, code, "found on the replica that holds it")
		} else {
			assert.Equal(t, codes.NotFound, code, "missing on %s, which does not hold it", replica)
		}
	}
}

func TestRingHashFindsEveryKeyAgainAndSpreadsKeysOverAllReplicas(t *testing.T) {
	r := startReplicas(t, 3)
	cache := r.client(t, "ring_hash")
	ctx := testContext(t)

	const n = 60
	for i := range n {
		key := fmt.Sprint("key-", i)
		require.NoError(t, store(ctx, cache, testToken, key, "v-"+key))
	}
	perReplica := make(map[string]int)
	for i := range n {
		key := fmt.Sprint("key-", i)
		replica, err := getFrom(t, cache, key)
		require.NoError(t, err, "key %q", key)
		assert.Equal(t, r.holder(t, key), replica, "key %q is read where it was stored", key)
		perReplica[replica]++
	}
	assert.ElementsMatch(t, r.addrs, keys(perReplica), "every replica holds keys: %v", perReplica)
	total := 0
	for _, sys := range r.byAddr {
		total += sys.keyCount(testToken)
	}
	assert.Equal(t, n, total, "each key is stored once")
}

func TestWhenAReplicaStopsItsKeysBecomeMissesNotErrors(t *testing.T) {
	r := startReplicas(t, 3)
	cache := r.client(t, "ring_hash")
	ctx := testContext(t)
	const n = 60
	for i := range n {
		key := fmt.Sprint("key-", i)
		require.NoError(t, store(ctx, cache, testToken, key, "v-"+key))
	}
	stopped := r.addrs[0]
	lost := make(map[string]bool)
	for i := range n {
		key := fmt.Sprint("key-", i)
		lost[key] = r.holder(t, key) == stopped
	}
	r.byAddr[stopped].srv.Stop()

	// Calls under way when it stopped may fail; once the balancer has
	// noticed, a lost key is a miss, answered by another replica.
	var lostKey string
	for key, l := range lost {
		if l {
			lostKey = key
			break
		}
	}
	require.NotEmpty(t, lostKey, "the stopped replica held keys")
	require.Eventually(t, func() bool {
		_, err := getFrom(t, cache, lostKey)
		return status.Code(err) == codes.NotFound
	}, 5*time.Second, 10*time.Millisecond)

	for i := range n {
		key := fmt.Sprint("key-", i)
		replica, err := getFrom(t, cache, key)
		if lost[key] {
			assert.Equal(t, codes.NotFound, status.Code(err), "key %q was on the stopped replica: %v", key, err)
		} else {
			assert.NoError(t, err, "key %q", key)
		}
		assert.NotEqual(t, stopped, replica)
	}
	// The lost keys can be stored again, on the replicas that are left.
	require.NoError(t, store(ctx, cache, testToken, lostKey, "v-"+lostKey))
	replica, err := getFrom(t, cache, lostKey)
	require.NoError(t, err)
	assert.NotEqual(t, stopped, replica)
}

func TestEveryResponseNamesItsReplica(t *testing.T) {
	r := startReplicas(t, 1)
	cache := r.client(t, "ring_hash")
	ctx := testContext(t)

	var header metadata.MD
	_, err := cache.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v"), AccountToken: testToken}, grpc.Header(&header))
	require.NoError(t, err)
	assert.Equal(t, r.addrs, header.Get(replicaHeader))

	replica, err := getFrom(t, cache, "missing")
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Equal(t, r.addrs[0], replica, "errors too")

	stream, err := cache.Dump(ctx, &rpc.DumpReq{AccountToken: testToken})
	require.NoError(t, err)
	header, err = stream.Header()
	require.NoError(t, err)
	assert.Equal(t, r.addrs, header.Get(replicaHeader), "and streams")
}

func TestUnknownPolicyIsRefused(t *testing.T) {
	_, err := dialReplicas([]string{"localhost:5051"}, "random", grpc.WithTransportCredentials(clientTLS(t, devCerts(t))))
	assert.ErrorContains(t, err, `unknown load-balancing policy "random"`)
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
