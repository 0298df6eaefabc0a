package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// replicas are cache servers sharing one Accounts service, as in a
// deployment of several replicas.
type replicas struct {
	certs string
	addrs []string
	stop  map[string]func() // by address: stops that replica as Ctrl-C does
}

func startReplicas(t *testing.T, n int) *replicas {
	t.Helper()
	certs := devCerts(t)
	accountsAddr := startAccounts(t, testAccountsConfig(t, certs, testAccounts))
	r := &replicas{certs: certs, stop: make(map[string]func())}
	for range n {
		addr, stop := startStoppableServer(t, testServerConfig(t, certs, accountsAddr))
		r.addrs = append(r.addrs, addr)
		r.stop[addr] = stop
	}
	return r
}

// startStoppableServer is startServer, with a function that stops the
// server before the test ends.
func startStoppableServer(t *testing.T, cfg serverConfig) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServer(ctx, cfg, lis) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			assert.NoError(t, <-done, "runServer")
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// client connects to every replica as the client command does with
// -addr listing them all and -lb policy.
func (r *replicas) client(t *testing.T, policy string) rpc.CacheClient {
	t.Helper()
	cfg := testClientConfig(t, r.certs, strings.Join(r.addrs, ","))
	cfg.lb = policy
	return connect(t, cfg)
}

// holders asks every replica on its own for testToken's items, and returns
// which replica holds each key, failing if a key is on several.
func (r *replicas) holders(t *testing.T) map[string]string {
	t.Helper()
	holders := make(map[string]string)
	for _, addr := range r.addrs {
		resp, err := connect(t, testClientConfig(t, r.certs, addr)).DumpAll(testContext(t), &rpc.DumpReq{AccountToken: testToken})
		require.NoError(t, err, "replica %s", addr)
		for _, item := range resp.Items {
			require.NotContains(t, holders, item.Key, "key %q is on %s and %s", item.Key, holders[item.Key], addr)
			holders[item.Key] = addr
		}
	}
	return holders
}

// getFrom makes a Get under ctx and returns the replica that answered,
// whatever the outcome.
func getFrom(ctx context.Context, t *testing.T, cache rpc.CacheClient, key string) (string, error) {
	t.Helper()
	var header metadata.MD
	resp, err := cache.Get(ctx, &rpc.GetReq{Key: key, AccountToken: testToken}, grpc.Header(&header))
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
	holder := r.holders(t)["k"]
	require.NotEmpty(t, holder)

	// Round robin takes each replica in turn, once it is connected; the
	// test's deadline bounds the wait for all three: every Get runs under
	// ctx, so once it expires the next Get fails the test.
	seen := make(map[string]codes.Code)
	for len(seen) < len(r.addrs) {
		replica, err := getFrom(ctx, t, cache, "k")
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
	holders := r.holders(t)
	assert.Len(t, holders, n, "each key is stored once")
	perReplica := make(map[string]int)
	for i := range n {
		key := fmt.Sprint("key-", i)
		replica, err := getFrom(ctx, t, cache, key)
		require.NoError(t, err, "key %q", key)
		assert.Equal(t, holders[key], replica, "key %q is read where it was stored", key)
		perReplica[replica]++
	}
	assert.ElementsMatch(t, r.addrs, keys(perReplica), "every replica holds keys: %v", perReplica)
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
	holders := r.holders(t)
	lost := make(map[string]bool)
	for i := range n {
		key := fmt.Sprint("key-", i)
		lost[key] = holders[key] == stopped
	}
	r.stop[stopped]()

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
		_, err := getFrom(ctx, t, cache, lostKey)
		return status.Code(err) == codes.NotFound
	}, 5*time.Second, 10*time.Millisecond)

	for i := range n {
		key := fmt.Sprint("key-", i)
		replica, err := getFrom(ctx, t, cache, key)
		if lost[key] {
			assert.Equal(t, codes.NotFound, status.Code(err), "key %q was on the stopped replica: %v", key, err)
		} else {
			assert.NoError(t, err, "key %q", key)
		}
		assert.NotEqual(t, stopped, replica)
	}
	// The lost keys can be stored again, on the replicas that are left.
	require.NoError(t, store(ctx, cache, testToken, lostKey, "v-"+lostKey))
	replica, err := getFrom(ctx, t, cache, lostKey)
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

	replica, err := getFrom(ctx, t, cache, "missing")
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Equal(t, r.addrs[0], replica, "errors too")

	stream, err := cache.Dump(ctx, &rpc.DumpReq{AccountToken: testToken})
	require.NoError(t, err)
	header, err = stream.Header()
	require.NoError(t, err)
	assert.Equal(t, r.addrs, header.Get(replicaHeader), "and streams")
}

func TestUnknownPolicyIsRefused(t *testing.T) {
	cfg := testClientConfig(t, devCerts(t), "localhost:5051")
	cfg.lb = "random"
	_, err := dial(cfg)
	assert.ErrorContains(t, err, `unknown load-balancing policy "random"`)
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestClientCommandDefaultsFindEveryKeyOnThreeReplicas(t *testing.T) {
	certs := devCerts(t)
	accountsAddr := startAccounts(t, testAccountsConfig(t, certs, testAccounts))
	var addrs []string
	for range 3 {
		addrs = append(addrs, startServer(t, testServerConfig(t, certs, accountsAddr)))
	}
	// The client command's defaults, given every replica.
	cache := connect(t, testClientConfig(t, certs, strings.Join(addrs, ",")))
	ctx := testContext(t)

	for i := range 30 {
		require.NoError(t, store(ctx, cache, testToken, fmt.Sprint("key-", i), "v"))
	}
	for i := range 30 {
		_, err := get(ctx, cache, testToken, fmt.Sprint("key-", i))
		assert.NoError(t, err, "key-%d is read from the replica it was stored on", i)
	}
}

func TestKeysSpreadOverEveryAddressOfTheServersName(t *testing.T) {
	// Two replicas on one port of 127.0.0.1 and 127.0.0.2, both listed
	// under the name cache.test by a DNS server of the test's own: the
	// client is given only the name, as in a deployment whose DNS lists
	// its replicas.
	certs := t.TempDir()
	require.NoError(t, writeDevCerts(certs, []string{"cache.test", "127.0.0.1", "127.0.0.2"}))
	accountsAddr := startAccounts(t, testAccountsConfig(t, certs, testAccounts))
	lis1, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	_, port, err := net.SplitHostPort(lis1.Addr().String())
	require.NoError(t, err)
	lis2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", port))
	if err != nil {
		lis1.Close()
		require.NoError(t, err)
	}
	for _, lis := range []net.Listener{lis1, lis2} {
		cfg := testServerConfig(t, certs, accountsAddr)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- runServer(ctx, cfg, lis) }()
		t.Cleanup(func() {
			cancel()
			assert.NoError(t, <-done, "server")
		})
	}

	// The DNS server answers A queries for cache.test with both addresses,
	// and every other query with no records.
	dns, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { dns.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := dns.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired})
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if q.Type == dnsmessage.TypeA && strings.EqualFold(q.Name.String(), "cache.test.") {
				for _, ip := range [][4]byte{{127, 0, 0, 1}, {127, 0, 0, 2}} {
					_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: ip})
				}
			}
			if msg, err := b.Finish(); err == nil {
				dns.WriteTo(msg, from)
			}
		}
	}()
	ctx := testContext(t)

	cache := connect(t, testClientConfig(t, certs, "dns://"+dns.LocalAddr().String()+"/cache.test:"+port))
	for i := range 30 {
		require.NoError(t, store(ctx, cache, testToken, fmt.Sprint("key-", i), "v"))
	}
	// Each replica, asked directly, holds some of the keys.
	for _, addr := range []string{lis1.Addr().String(), lis2.Addr().String()} {
		replica := connect(t, testClientConfig(t, certs, addr))
		held := 0
		for i := range 30 {
			if _, err := get(ctx, replica, testToken, fmt.Sprint("key-", i)); err == nil {
				held++
			}
		}
		assert.NotZero(t, held, "replica %s holds none of the 30 keys: the client sent every call to the other", addr)
	}
}
