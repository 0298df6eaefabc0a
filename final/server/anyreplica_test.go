package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/internal/dnstest"
	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/keyaffinity"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/telemetry"
	"grpcworkshop.example/final/tlsutil"
)

const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// dumpKeys returns every key a Dump through c streams, in order.
func dumpKeys(ctx context.Context, t *testing.T, c rpc.CacheClient) []string {
	t.Helper()
	s, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	var keys []string
	for {
		it, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return keys
		}
		require.NoError(t, err)
		keys = append(keys, it.Key)
	}
}

// exportKeys returns the keys of an Export through c, sorted.
func exportKeys(ctx context.Context, t *testing.T, c rpc.CacheClient) []string {
	t.Helper()
	s, err := c.Export(ctx, &rpc.ExportReq{})
	require.NoError(t, err)
	var body []byte
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		body = append(body, chunk.Data...)
	}
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		var item struct{ Key string }
		require.NoError(t, json.Unmarshal([]byte(line), &item))
		keys = append(keys, item.Key)
	}
	sort.Strings(keys)
	return keys
}

func forwardedCalls(st *devstack.Stack) int64 {
	var n int64
	for _, c := range st.Caches {
		n += c.Forwarded()
	}
	return n
}

func TestEveryKeyStoredThroughRoundRobinIsReadFromAnyReplica(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	rr := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, client.Options{Extra: []grpc.DialOption{grpc.WithDefaultServiceConfig(roundRobin)}}))
	ctx := testContext(t)

	var keys []string
	for i := range 30 {
		k := fmt.Sprint("rr-", i)
		keys = append(keys, k)
		require.NoError(t, store(ctx, rr, k, "v-"+k))
	}
	total := 0
	for _, cs := range st.Caches {
		total += cs.Service().Data().Len(tok)
	}
	assert.Equal(t, 30, total, "each key is stored once, on its owner")

	for i, addr := range st.CacheAddrs {
		one := rpc.NewCacheClient(dialTarget(t, st, addr, tok, client.Options{}))
		for _, k := range keys {
			got, err := get(ctx, one, k)
			require.NoError(t, err, "key %s through replica %d", k, i+1)
			assert.Equal(t, "v-"+k, got)
		}
		dumped := dumpKeys(ctx, t, one)
		sort.Strings(dumped)
		want := append([]string(nil), keys...)
		sort.Strings(want)
		assert.Equal(t, want, dumped, "a Dump through replica %d returns every key once", i+1)
		assert.Equal(t, want, exportKeys(ctx, t, one), "and so does an Export (REST's Dump)")
	}
	assert.Positive(t, forwardedCalls(st), "keys another replica owns were forwarded")
}

func TestRingHashClientsPayNoHopAndTheReplicasAgreeWithTheirRing(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	c := cacheClient(t, st, tok) // ring hash
	ctx := client.AskReplica(testContext(t))
	ring := keyaffinity.NewRing(st.CacheAddrs)
	name := map[string]string{}
	for i, a := range st.CacheAddrs {
		name[a] = fmt.Sprint("cache-", i+1)
	}

	for i := range 60 {
		k := fmt.Sprint("key-", i)
		var hdr metadata.MD
		require.NoError(t, store(ctx, c, k, "v", grpc.Header(&hdr)))
		assert.Equal(t, []string{name[ring.Owner(k)]}, hdr.Get(client.ReplicaHeader), "key %s: grpc-go's ring and the replicas' agree", k)
		assert.Empty(t, hdr.Get(forward.Header), "key %s was not forwarded", k)
		_, err := get(ctx, c, k, grpc.Header(&hdr))
		require.NoError(t, err)
		assert.Empty(t, hdr.Get(forward.Header))
	}
	assert.Zero(t, forwardedCalls(st), "no replica forwarded a ring-hash client's call")
}

// recordCalls records, on each replica, the metadata and deadline of the
// Gets of key "probe" it serves.
type recordCalls struct {
	mu    sync.Mutex
	calls []recorded
}

type recorded struct {
	replica  int
	md       metadata.MD
	deadline time.Time
}

func (r *recordCalls) tune(i int, c *server.CacheConfig) {
	c.Unary = append(c.Unary, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if g, ok := req.(*rpc.GetReq); ok && g.Key == "probe" {
			md, _ := metadata.FromIncomingContext(ctx)
			dl, _ := ctx.Deadline()
			r.mu.Lock()
			r.calls = append(r.calls, recorded{i, md, dl})
			r.mu.Unlock()
		}
		return handler(ctx, req)
	})
}

// notOwning is a replica of st that does not own key, and a client of it alone.
func notOwning(t *testing.T, st *devstack.Stack, key, token string) (int, rpc.CacheClient) {
	t.Helper()
	owner := keyaffinity.NewRing(st.CacheAddrs).Owner(key)
	for i, a := range st.CacheAddrs {
		if a != owner {
			return i, rpc.NewCacheClient(dialTarget(t, st, a, token, client.Options{Retry: retryOnce}))
		}
	}
	t.Fatal("one replica")
	return 0, nil
}

func TestAForwardedCallKeepsTokenDryRunDeadlineTraceAndErrors(t *testing.T) {
	var rec recordCalls
	// Every replica caps calls at an hour: the caller's deadline (the
	// test's) is far sooner than any replica's own cap.
	st := startStack(t, stackOpts{replicas: 3, tuneCache: func(i int, c *server.CacheConfig) {
		rec.tune(i, c)
		c.MaxDeadline = time.Hour
	}})
	ring := keyaffinity.NewRing(st.CacheAddrs)
	ctx := testContext(t)

	// The caller's metadata and deadline reach the owner, marked once.
	i, one := notOwning(t, st, "probe", tok)
	deadline, _ := ctx.Deadline()
	dctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	var hdr metadata.MD
	start := time.Now()
	_, err := get(client.AskReplica(dctx), one, "probe", grpc.Header(&hdr))
	took := time.Since(start)
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Equal(t, []string{fmt.Sprint("cache-", i+1)}, hdr.Get(forward.Header), "the response names the replica that forwarded")
	rec.mu.Lock()
	require.Len(t, rec.calls, 1, "the owner alone served it")
	got := rec.calls[0]
	rec.mu.Unlock()
	assert.Equal(t, ring.Owner("probe"), st.CacheAddrs[got.replica])
	assert.Equal(t, []string{"Bearer " + tok}, got.md.Get("authorization"))
	assert.Equal(t, []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, got.md.Get("traceparent"))
	assert.Equal(t, []string{fmt.Sprint("cache-", i+1)}, got.md.Get(forward.Header))
	assert.Len(t, got.md.Get(keyaffinity.Header), 1, "the key header is set once")
	// grpc-timeout travels as the time left (rounded up), so each hop adds
	// its transit to the deadline: the owner's is the caller's, later by
	// at most the time the call took; a replica's own cap is an hour away.
	assert.False(t, got.deadline.Before(deadline), "the owner's deadline is before the caller's")
	assert.False(t, got.deadline.After(deadline.Add(took)),
		"the owner works to the caller's deadline, not its own cap (%v after the caller's)", got.deadline.Sub(deadline))
	assert.Equal(t, []string{fmt.Sprint("cache-", got.replica+1)}, hdr.Get(client.ReplicaHeader), "x-replica names the owner")

	// Dry run: everything checked on the owner, nothing stored.
	_, dry := notOwning(t, st, "dry", tok)
	require.NoError(t, store(client.WithDryRun(ctx), dry, "dry", "v"))
	_, err = get(ctx, dry, "dry")
	assert.Equal(t, codes.NotFound, status.Code(err), "a forwarded dry run stores nothing")
	err = store(metadata.AppendToOutgoingContext(ctx, client.DryRunHeader, "yes"), dry, "dry", "v")
	assertReason(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")

	// A conditional Store: the condition travels in the message, the
	// revision comes back, a stale one is refused by the owner.
	_, cas := notOwning(t, st, "cas", tok)
	first, err := cas.Store(ctx, &rpc.StoreReq{Key: "cas", Val: []byte("v0"), IfAbsent: true})
	require.NoError(t, err)
	require.Positive(t, first.GetRevision())
	second, err := cas.Store(ctx, &rpc.StoreReq{Key: "cas", Val: []byte("v1"), IfRevision: first.GetRevision()})
	require.NoError(t, err)
	_, err = cas.Store(ctx, &rpc.StoreReq{Key: "cas", Val: []byte("stale"), IfRevision: first.GetRevision()})
	assertReason(t, err, codes.FailedPrecondition, "REVISION_MISMATCH")
	_, err = cas.Store(ctx, &rpc.StoreReq{Key: "cas", Val: []byte("stale"), IfAbsent: true})
	assertReason(t, err, codes.FailedPrecondition, "REVISION_MISMATCH")
	read, err := cas.Get(ctx, &rpc.GetReq{Key: "cas"})
	require.NoError(t, err)
	assert.Equal(t, "v1", string(read.GetVal()))
	assert.Equal(t, second.GetRevision(), read.GetRevision())

	// Errors come back with their details; the quota is the owner's.
	_, bad := notOwning(t, st, "k", "nobody")
	assertReason(t, store(ctx, bad, "k", "v"), codes.Unauthenticated, "UNKNOWN_TOKEN")
	var quotaErr error
	for n := range 10 {
		k := fmt.Sprint("small-", n)
		_, c := notOwning(t, st, k, "small")
		if quotaErr = store(ctx, c, k, "v"); quotaErr != nil {
			require.Equal(t, 3, n, "the 4th key of a 3-key tenant is refused")
			break
		}
	}
	assertReason(t, quotaErr, codes.FailedPrecondition, "QUOTA_EXCEEDED")
	var qf *errdetails.QuotaFailure
	for _, d := range status.Convert(quotaErr).Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			qf = q
		}
	}
	assert.NotNil(t, qf, "QuotaFailure survives the hop")
}

func assertReason(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	require.Error(t, err)
	st := status.Convert(err)
	assert.Equal(t, code, st.Code(), "%v", err)
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	require.NotNil(t, info, "%v carries ErrorInfo", err)
	assert.Equal(t, reason, info.Reason)
	assert.Equal(t, apierr.Domain, info.Domain)
}

func TestAForwardedCallIsNeverForwardedAgain(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	ctx := testContext(t)
	rh := cacheClient(t, st, tok)
	require.NoError(t, store(ctx, rh, "k", "v"))

	// A call already marked as forwarded is served where it lands, even
	// by a replica that does not own its key: it finds nothing there.
	_, one := notOwning(t, st, "k", tok)
	_, err := get(metadata.AppendToOutgoingContext(ctx, forward.Header, "cache-9"), one, "k")
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Zero(t, forwardedCalls(st))
}

func TestHealthWatchOutlivesTheDeadlineCap(t *testing.T) {
	const maxDeadline = 100 * time.Millisecond
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.MaxDeadline = maxDeadline }})
	conn := dialTarget(t, st, st.CacheAddrs[0], "", client.Options{})
	ctx := testContext(t)
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()

	w, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	first, err := w.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, first.Status)

	// The watch must still be open after several times the cap: only the
	// passing of time can show that.
	time.Sleep(3 * maxDeadline)
	done := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- st.Caches[0].Shutdown(sctx)
	}()
	next, err := w.Recv()
	require.NoError(t, err, "the watch was not cut by the deadline cap")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.Status, "and it sees the replica drain")
	cancelWatch()
	require.NoError(t, <-done)
}

func TestReflectionAndHealthIgnoreDryRunAndGzipIsAccepted(t *testing.T) {
	st := startStack(t, stackOpts{})
	conn := dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{})
	ctx := metadata.AppendToOutgoingContext(testContext(t), client.DryRunHeader, "yes")

	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: rpc.Cache_ServiceDesc.ServiceName}}))
	r, err := rs.Recv()
	require.NoError(t, err, "reflection ignores the dry-run header")
	assert.NotEmpty(t, r.GetFileDescriptorResponse().GetFileDescriptorProto())
	require.NoError(t, rs.CloseSend())

	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName}, grpc.UseCompressor(gzip.Name))
	require.NoError(t, err, "health ignores the dry-run header, and takes gzip")
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, h.Status)

	c := rpc.NewCacheClient(conn)
	assertReason(t, store(ctx, c, "k", "v"), codes.InvalidArgument, "INVALID_ARGUMENT")

	plain := testContext(t)
	big := strings.Repeat("compressible ", 50_000)
	require.NoError(t, store(plain, c, "gz", big, grpc.UseCompressor(gzip.Name)), "a gzip Store succeeds")
	got, err := get(plain, c, "gz", grpc.UseCompressor(gzip.Name))
	require.NoError(t, err)
	assert.Equal(t, big, got)
}

// TestPeersFromAResolverAreWatched names the peers through a resolver (as
// dns:/// does) and leaves each replica to find itself by its port.
func TestPeersFromAResolverAreWatched(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3, tuneCache: func(i int, c *server.CacheConfig) {
		var addrs []resolver.Address
		for _, a := range strings.Split(c.Peers.Addrs, ",") {
			addrs = append(addrs, resolver.Address{Addr: a})
		}
		r := manual.NewBuilderWithScheme(fmt.Sprintf("peers-%s-%d", strings.ToLower(t.Name()), i))
		r.InitialState(resolver.State{Addresses: addrs})
		resolver.Register(r)
		c.Peers.Addrs, c.Peers.Self = r.Scheme()+":///cache", ""
		c.Peers.TLS = c.Peers.TLS.Clone()
		c.Peers.TLS.ServerName = "127.0.0.1" // the development certificate's name for loopback
	}})
	ctx := testContext(t)
	rh := cacheClient(t, st, tok)
	for i := range 30 {
		require.NoError(t, store(ctx, rh, fmt.Sprint("k", i), "v"))
	}
	assert.Zero(t, forwardedCalls(st), "each replica found itself: a ring-hash client pays no hop")
	for _, addr := range st.CacheAddrs {
		one := rpc.NewCacheClient(dialTarget(t, st, addr, tok, client.Options{}))
		for i := range 30 {
			_, err := get(ctx, one, fmt.Sprint("k", i))
			require.NoError(t, err)
		}
		assert.Len(t, dumpKeys(ctx, t, one), 30)
	}
	assert.Positive(t, forwardedCalls(st))
}

func TestWithItsOwnerDownAKeyIsServedByTheNextReplicaAndDumpFailsLoudly(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	ctx := testContext(t)
	ring := keyaffinity.NewRing(st.CacheAddrs)
	down := st.CacheAddrs[2]
	st.Caches[2].Stop()

	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprint("k", i); ring.Owner(k) == down {
			key = k
		}
	}
	one := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{}))
	two := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[1], tok, client.Options{}))
	require.NoError(t, store(ctx, one, key, "v"), "the forwarding replica's ring walks on past the stopped owner")
	got, err := get(ctx, two, key)
	require.NoError(t, err, "and every replica walks on to the same one")
	assert.Equal(t, "v", got)

	_, err = dumpOnce(ctx, one)
	assert.Equal(t, codes.Unavailable, status.Code(err), "a Dump that cannot reach every replica fails: %v", err)
}

// dumpOnce drains one Dump and returns how many items came before its end.
func dumpOnce(ctx context.Context, c rpc.CacheClient) (int, error) {
	s, err := c.Dump(ctx, &rpc.DumpReq{})
	if err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

// TestAForwardedCallStaysInTheCallersTrace: with tracing on, the hop is a
// span of the forwarding replica and the owner's span is its child, in the
// caller's trace (the caller's traceparent is not sent twice).
func TestAForwardedCallStaysInTheCallersTrace(t *testing.T) {
	recs := map[string]*endedSpans{}
	withTracer := func(service string) *telemetry.Telemetry {
		rec := &endedSpans{changed: make(chan struct{})}
		recs[service] = rec
		tel, err := telemetry.New(context.Background(), telemetry.Options{
			Service:        service,
			TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
		})
		require.NoError(t, err)
		return tel
	}
	tels := []*telemetry.Telemetry{withTracer("cache-1"), withTracer("cache-2"), withTracer("cache-3")}
	clientTel := withTracer("client")
	st := startStack(t, stackOpts{replicas: 3, tuneCache: func(i int, c *server.CacheConfig) { c.Telemetry = tels[i] }})
	ring := keyaffinity.NewRing(st.CacheAddrs)
	from, owner := -1, -1
	for i, a := range st.CacheAddrs {
		if a == ring.Owner("traced") {
			owner = i
		} else if from < 0 {
			from = i
		}
	}
	conn := dialTarget(t, st, st.CacheAddrs[from], tok, client.Options{Extra: []grpc.DialOption{clientTel.DialOption()}})
	ctx := testContext(t)
	require.NoError(t, store(ctx, rpc.NewCacheClient(conn), "traced", "v"))

	byName := func(service, name string) sdktrace.ReadOnlySpan {
		t.Helper()
		s, err := recs[service].await(ctx, name)
		require.NoError(t, err, "%s has no span %q", service, name)
		return s
	}
	caller := byName("client", "Attempt."+rpc.Cache_ServiceDesc.ServiceName+".Store")
	received := byName(fmt.Sprint("cache-", from+1), "Recv."+rpc.Cache_ServiceDesc.ServiceName+".Store")
	hop := byName(fmt.Sprint("cache-", from+1), "Attempt."+rpc.Cache_ServiceDesc.ServiceName+".Store")
	served := byName(fmt.Sprint("cache-", owner+1), "Recv."+rpc.Cache_ServiceDesc.ServiceName+".Store")
	for _, s := range []sdktrace.ReadOnlySpan{received, hop, served} {
		assert.Equal(t, caller.SpanContext().TraceID(), s.SpanContext().TraceID(), s.Name())
	}
	assert.Equal(t, caller.SpanContext().SpanID(), received.Parent().SpanID())
	assert.Equal(t, hop.SpanContext().SpanID(), served.Parent().SpanID(), "the owner's span is the hop's child")
	assert.True(t, served.Parent().IsRemote())
}

// TestKeysForwardedToAPeerCutOffOverAnOpenConnectionMoveWithinTheKeepalive:
// a replica forwards a key to its owner over a connection opened before
// the owner was cut off (its cable pulled: nothing arrives, nothing is
// refused). The forwarder's keepalive to its peers notices within its
// time and timeout; then its ring walks on to the next replica, itself:
// a Get through it misses, a Store lands on it, instead of every call
// for the cut replica's keys ending DeadlineExceeded. With the former
// keepalive (30s, 10s) this took up to 40s.
func TestKeysForwardedToAPeerCutOffOverAnOpenConnectionMoveWithinTheKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive to notice the cut: about 14s")
	}
	t.Parallel()
	// cache-2 is reached through the cable, by everyone: the peers are
	// cache-1 and the cable's end.
	cable := faulttest.NewCable(t, "")
	var peers string
	st := startStack(t, stackOpts{replicas: 2, tuneCache: func(i int, c *server.CacheConfig) {
		if i == 0 {
			peers = c.Peers.Self + "," + cable.Addr()
		} else {
			cable.Connect(c.Peers.Self)
			c.Peers.Self = cable.Addr()
		}
		c.Peers.Addrs = peers
	}})
	ring := keyaffinity.NewRing(strings.Split(peers, ","))
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprint("k", i); ring.Owner(k) == cable.Addr() {
			key = k
		}
	}
	// A client of cache-1 alone, as a round-robin client that reached it.
	one := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{}))
	ctx := testContext(t)
	require.Equal(t, "cache-2", replicaOf(t, func(opt grpc.CallOption) error { return store(client.AskReplica(ctx), one, key, "v", opt) }),
		"forwarded to its owner, through the cable")

	cut := time.Now()
	cable.Cut()
	// The hop's connection goes quiet now: a ping after the keepalive
	// time, closed its timeout later; the caller retries (the hop does
	// not), and the forwarder's attempt to reconnect fails after the
	// client's connect timeout (2s) before its ring walks on. Two seconds
	// more for the retry's backoff and a busy machine.
	cfg := server.DefaultCacheConfig()
	bound := cfg.Peers.KeepaliveTime + cfg.Peers.KeepaliveTimeout + 2*time.Second + 2*time.Second
	took := faulttest.AwaitMiss(t, cut, bound, func(ctx context.Context) error {
		_, err := get(ctx, one, key)
		return err
	})
	t.Logf("a Get through cache-1 of the cut replica's key missed %s after the cut (bound %s)", took.Round(time.Millisecond), bound)
	ctx = testContext(t)
	assert.Equal(t, "cache-1", replicaOf(t, func(opt grpc.CallOption) error { return store(client.AskReplica(ctx), one, key, "v2", opt) }),
		"a Store of the cut replica's key lands on the next replica")
}

// TestAReplicaReachesANewAccountsWithinTheKeepaliveAfterTheOldOneIsCutOff:
// the replica reaches Accounts by a DNS name, as through a Kubernetes
// Service; Accounts' host is then cut off (its cable pulled: nothing
// arrives, nothing is refused) and a new Accounts starts elsewhere, which
// DNS names instead. The replica's keepalive to Accounts notices the
// dead connection, the channel resolves the name again and reaches the
// new Accounts: a Store of a new key (a reservation at Accounts)
// succeeds within the keepalive's time and timeout plus a reconnect.
// Without keepalive the connection stays open until the kernel gives up
// (about 15 minutes over a real cut; never here, where the proxy's kernel
// acknowledges everything), and every new key fails meanwhile.
func TestAReplicaReachesANewAccountsWithinTheKeepaliveAfterTheOldOneIsCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive to notice the cut: about 13s")
	}
	t.Parallel()
	// The name's port is fixed: the cable to Accounts #1 listens on .7,
	// Accounts #2 on .8, both at that port.
	port := strconv.Itoa(dnstest.FreePortOn(t, "127.0.0.7", "127.0.0.8"))
	cable := faulttest.NewCableAt(t, net.JoinHostPort("127.0.0.7", port), "")
	lis2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.8", port))
	require.NoError(t, err)
	t.Cleanup(func() { lis2.Close() })
	ns := dnstest.Start(t)
	ns.Set("accounts.test", "127.0.0.7")
	certs := t.TempDir()
	require.NoError(t, tlsutil.WriteDevCerts(certs, append([]string{"accounts.test"}, tlsutil.DefaultHosts...)))

	// Accounts #2: the same accounts and CA, a ledger of its own (in
	// memory, no recovery grace: the replica registers its lease anew).
	accTLS, err := tlsutil.Dir(certs).Server(true)
	require.NoError(t, err)
	acfg := server.DefaultAccountsConfig()
	acfg.TLS, acfg.Logger, acfg.Directory = accTLS, quiet, testDirectory()
	acc2, err := server.NewAccounts(acfg)
	require.NoError(t, err)
	served := make(chan error, 1)
	t.Cleanup(func() {
		acc2.Stop()
		select {
		case err := <-served:
			assert.NoError(t, err)
		default: // never served
		}
	})

	st, err := devstack.Start(devstack.Config{
		CertDir:      certs,
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0"},
		Logger:       quiet,
		Directory:    testDirectory(),
		TuneCache: func(_ int, c *server.CacheConfig) {
			cable.Connect(c.Accounts.Addr)
			c.Accounts.Addr = "dns://" + ns.Addr + "/accounts.test:" + port
		},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)

	c := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{}))
	require.NoError(t, store(testContext(t), c, "before", "v"), "Accounts #1 is reached through the cable")
	require.Zero(t, st.Caches[0].Service().Data().Spare(tok), "the next new key needs a reservation at Accounts")

	cut := time.Now()
	cable.Cut()
	ns.Set("accounts.test", "127.0.0.8")
	go func() { served <- acc2.Serve(lis2) }()

	// The connection to #1 goes quiet: a ping after the keepalive time,
	// closed its timeout later; then the name is resolved again and #2
	// reached (a connection attempt that reaches the cut address first
	// gives up after 2s). Two seconds more for a busy machine.
	cfg := server.DefaultCacheConfig()
	bound := cfg.Accounts.KeepaliveTime + cfg.Accounts.KeepaliveTimeout + 2*time.Second + 2*time.Second
	for {
		left := time.Until(cut.Add(bound))
		require.Positive(t, left, "a new key still fails %s after Accounts was cut off and replaced", bound)
		ctx, cancel := context.WithTimeout(context.Background(), min(left, 5*time.Second))
		err := store(ctx, c, "after", "v")
		cancel()
		if err == nil {
			break
		}
		// Until then Accounts does not answer: Unavailable (with a retry
		// delay), or the call's own deadline.
		require.Contains(t, []codes.Code{codes.Unavailable, codes.DeadlineExceeded}, status.Code(err), "%v", err)
		t.Logf("%s after the cut: %v", time.Since(cut).Round(time.Millisecond), err)
	}
	t.Logf("a new key was stored %s after Accounts was cut off and replaced (bound %s)", time.Since(cut).Round(time.Millisecond), bound)
	assert.GreaterOrEqual(t, acc2.Service().Ledger().Held(tok), int64(2),
		"Accounts #2 holds the slots of the replica's re-registered key and of the new one")
}

// TestServersPermitTheKeepaliveOfOurClientsAndPeers: a client that pings
// more often than the server's KeepaliveMinTime is sent GOAWAY
// too_many_pings after a few pings; ours (and the replicas' connections
// to their peers and to Accounts) ping at most every
// client.DefaultKeepaliveTime.
func TestServersPermitTheKeepaliveOfOurClientsAndPeers(t *testing.T) {
	cc, ac := server.DefaultCacheConfig(), server.DefaultAccountsConfig()
	for _, every := range []time.Duration{client.DefaultKeepaliveTime, client.MinKeepaliveTime, cc.Peers.KeepaliveTime, cc.Accounts.KeepaliveTime} {
		assert.Less(t, cc.KeepaliveMinTime, every)
		assert.Less(t, ac.KeepaliveMinTime, every)
	}
}

// TestANewReplicaFindsItselfAmongItsPeersSoonAfterDNSListsIt: a replica
// that starts before DNS lists it (a new pod, not ready yet) resolves its
// peers without itself and forwards even its own keys. It asks DNS again
// until it finds itself, within seconds of being listed, rather than when
// a connection to a peer reaches its maximum age (5m by default).
func TestANewReplicaFindsItselfAmongItsPeersSoonAfterDNSListsIt(t *testing.T) {
	ns := dnstest.Start(t)
	ips := []string{"127.0.0.2", "127.0.0.3"}
	port := dnstest.FreePortOn(t, append(ips, "127.0.0.4")...) // .4: Accounts
	var addrs []string
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	ns.Set("accounts.test", "127.0.0.4")
	ns.Set("cache.test", ips[0]) // cache-2 runs, but DNS does not name it yet
	certs := t.TempDir()
	require.NoError(t, tlsutil.WriteDevCerts(certs, []string{"cache.test", "accounts.test"}))
	st, err := devstack.Start(devstack.Config{
		CertDir:      certs,
		AccountsAddr: "127.0.0.4:0",
		CacheAddrs:   addrs,
		Logger:       quiet,
		Directory:    testDirectory(),
		TuneCache: func(_ int, c *server.CacheConfig) {
			_, accPort, err := net.SplitHostPort(c.Accounts.Addr)
			if err == nil {
				c.Accounts.Addr = "dns://" + ns.Addr + "/accounts.test:" + accPort
			}
			c.Peers.Addrs = "dns://" + ns.Addr + "/cache.test:" + strconv.Itoa(port)
		},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)

	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	tlsCfg.ServerName = "cache.test"
	conn, err := client.Dial(addrs[1], client.Options{TLS: tlsCfg, Token: tok})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	two := rpc.NewCacheClient(conn) // cache-2 alone

	ring := keyaffinity.NewRing(addrs)
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprint("k", i); ring.Owner(k) == addrs[1] {
			key = k
		}
	}
	// The replica that served a Store through cache-2 ("" on an error).
	servedBy := func() string {
		ctx, cancel := context.WithTimeout(client.AskReplica(context.Background()), 5*time.Second)
		defer cancel()
		var md metadata.MD
		if err := store(ctx, two, key, "v", grpc.Header(&md)); err != nil {
			t.Logf("store %s through cache-2: %v", key, err)
			return ""
		}
		return strings.Join(md.Get(client.ReplicaHeader), ",")
	}
	require.Equal(t, "cache-1", servedBy(), "unlisted, cache-2 forwards its own key to the only peer DNS names")

	ns.Set("cache.test", ips...)
	listed := time.Now()
	require.Eventually(t, func() bool { return servedBy() == "cache-2" }, 20*time.Second, 50*time.Millisecond,
		"cache-2 finds itself among its peers once DNS lists it")
	t.Logf("cache-2 served its own key %s after DNS listed it", time.Since(listed).Round(10*time.Millisecond))
}
