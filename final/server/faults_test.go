package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
)

func TestAccountLookupsAreCachedSoAccountsDownKeepsKnownTenantsServing(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Auth.TTL = time.Hour }})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)
	require.NoError(t, store(ctx, c, "k", "v"))

	st.Accounts.Stop() // Accounts is down from here on

	got, err := get(ctx, c, "k")
	require.NoError(t, err, "a Get of a known tenant makes no remote call")
	assert.Equal(t, "v", got)
	require.NoError(t, store(ctx, c, "k", "v2"), "nor does an overwrite")
	assert.Equal(t, codes.Unavailable, status.Code(store(ctx, c, "new-key", "v")), "a new key needs Accounts")
	assert.Equal(t, codes.Unavailable, status.Code(store(ctx, cacheClient(t, st, "other"), "k", "v")), "so does an unknown tenant")
}

func TestRevokedTokenAndChangedQuotaTakeEffect(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Auth.TTL = 10 * time.Millisecond }})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)
	require.NoError(t, store(ctx, c, "k", "v"))

	// The quota is enforced by Accounts itself: it applies to the next new key.
	st.Accounts.Service().SetDirectory(accounts.Accounts(map[string]accounts.Account{tok: {MaxCacheKeys: 1}}))
	assert.Equal(t, codes.FailedPrecondition, status.Code(store(ctx, c, "second", "v")))

	// A revoked token stops working once the replica's cached lookup expires (AuthTTL).
	st.Accounts.Service().SetDirectory(accounts.Accounts(map[string]accounts.Account{}))
	require.Eventually(t, func() bool {
		_, err := get(ctx, c, "k")
		return status.Code(err) == codes.Unauthenticated
	}, 5*time.Second, 5*time.Millisecond)
}

// blockingAccounts makes Accounts' GetByToken for tok wait for the caller's
// deadline, recording the deadline it was given (other tokens are answered:
// a call with one opens the connections).
func blockingAccounts(deadlines chan<- time.Duration) func(*server.AccountsConfig) {
	return func(c *server.AccountsConfig) {
		c.Unary = append(c.Unary, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if r, ok := req.(*rpc.GetByTokenReq); !ok || r.GetToken() != tok {
				return h(ctx, req)
			}
			dl, ok := ctx.Deadline()
			if !ok {
				dl = time.Now().Add(time.Hour)
			}
			deadlines <- time.Until(dl)
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		})
	}
}

func TestSlowAccountsCallerDeadlinePropagatesAndServerCapsIt(t *testing.T) {
	deadlines := make(chan time.Duration, 10)
	st := startStack(t, stackOpts{
		tuneAccounts: blockingAccounts(deadlines),
		tuneCache:    func(_ int, c *server.CacheConfig) { c.MaxDeadline = 300 * time.Millisecond },
	})
	conn := dialTarget(t, st, st.Target(), tok, client.Options{})
	c := rpc.NewCacheClient(conn)
	// Both connections (the client's to the replica, the replica's to
	// Accounts: another tenant's Store opens it) are open before the short
	// deadline starts: it bounds the call, not a TLS handshake that a busy
	// machine can make last longer, so that Accounts would never see it.
	// The server's 300ms cap may end the first Stores while the connection
	// to Accounts is still being opened: until one succeeds, try again.
	warm, warmCtx := cacheClient(t, st, "other"), testContext(t)
	for err := store(warmCtx, warm, "warm-up", "v"); err != nil; err = store(warmCtx, warm, "warm-up", "v") {
		require.NoError(t, warmCtx.Err(), "warming up: %v", err)
	}
	resp, err := healthpb.NewHealthClient(conn).Check(testContext(t), &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.Status)
	// seen is the deadline Accounts saw, bounded so that a call that never
	// reached it fails the test instead of hanging it.
	seen := func() time.Duration {
		select {
		case d := <-deadlines:
			return d
		case <-testContext(t).Done():
			require.FailNow(t, "the call never reached Accounts")
			return 0
		}
	}

	// The caller's deadline reaches Accounts through the replica.
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	assert.Equal(t, codes.DeadlineExceeded, status.Code(store(short, c, "k", "v")))
	assert.LessOrEqual(t, seen(), 200*time.Millisecond, "Accounts got the caller's deadline")

	// A caller with a long deadline is capped by the server.
	assert.Equal(t, codes.DeadlineExceeded, status.Code(store(testContext(t), c, "k", "v")))
	assert.LessOrEqual(t, seen(), 300*time.Millisecond, "Accounts got the server's cap, not the caller's 10s")
}

type panicky struct {
	rpc.UnimplementedAccountsServer
}

func (panicky) GetByToken(context.Context, *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	panic("boom")
}

func TestPanicInAHandlerIsInternalAndTheServerKeepsServing(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) {
		c.Register = func(s *grpc.Server) { rpc.RegisterAccountsServer(s, panicky{}) }
	}})
	conn := dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{})
	ctx := testContext(t)

	_, err := rpc.NewAccountsClient(conn).GetByToken(ctx, &rpc.GetByTokenReq{Token: "x"})
	assert.Equal(t, codes.Internal, status.Code(err), "got %v", err)
	require.NoError(t, store(ctx, rpc.NewCacheClient(conn), "k", "v"))
}

func TestLoggingInterceptorsOnBothSides(t *testing.T) {
	var srvLog, cliLog syncBuffer
	st := startStack(t, stackOpts{logger: slog.New(slog.NewTextHandler(&srvLog, nil))})
	conn := dialTarget(t, st, st.Target(), tok, client.Options{Logger: slog.New(slog.NewTextHandler(&cliLog, nil))})
	c := rpc.NewCacheClient(conn)
	ctx := testContext(t)

	require.NoError(t, store(ctx, c, "k", "v"))
	_, err := get(ctx, c, "missing")
	require.Error(t, err)
	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	for {
		if _, err := stream.Recv(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	for _, l := range []*syncBuffer{&srvLog, &cliLog} {
		assert.Contains(t, l.String(), "method="+rpc.Cache_Store_FullMethodName)
		assert.Contains(t, l.String(), "code=NotFound")
		assert.Contains(t, l.String(), "method="+rpc.Cache_Dump_FullMethodName)
		assert.Contains(t, l.String(), "duration=")
	}
	assert.Contains(t, srvLog.String(), "method="+rpc.Accounts_GetByToken_FullMethodName, "the replica logs its own calls to Accounts")
	assert.Contains(t, srvLog.String(), "server stream")
	assert.Contains(t, cliLog.String(), "client stream")
}

func dumpAll(t *testing.T, ctx context.Context, c rpc.CacheClient) map[string]string {
	t.Helper()
	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	got := map[string]string{}
	for {
		it, err := stream.Recv()
		if err == io.EOF {
			return got
		}
		require.NoError(t, err)
		got[it.Key] = string(it.Val)
	}
}

func TestDumpStreamsOnlyTheCallersItems(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.Sizes.DumpBatch = 2 }})
	mine, theirs := cacheClient(t, st, tok), cacheClient(t, st, "other")
	ctx := testContext(t)
	want := map[string]string{}
	for i := range 7 {
		k := fmt.Sprint("k", i)
		want[k] = fmt.Sprint("v", i)
		require.NoError(t, store(ctx, mine, k, want[k]))
	}
	require.NoError(t, store(ctx, theirs, "secret", "x"))

	assert.Equal(t, want, dumpAll(t, ctx, mine))
	assert.Equal(t, map[string]string{"secret": "x"}, dumpAll(t, ctx, theirs))
}

func TestDumpHoldsNoLockWhileSending(t *testing.T) {
	st := startStack(t, stackOpts{})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)
	big := string(make([]byte, 256<<10))
	for i := range 20 { // 5 MiB: far more than the HTTP/2 flow-control window
		require.NoError(t, store(ctx, c, fmt.Sprint("k", i), big))
	}
	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	_, err = stream.Recv() // the server is now blocked sending to a reader that does not read
	require.NoError(t, err)

	require.NoError(t, store(ctx, c, "k0", "small"), "a Store of the same tenant is not blocked by the Dump")
	require.NoError(t, store(ctx, c, "new", "small"))
}

func TestDumpCancelledHalfWayLeavesTheServerServing(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.Sizes.DumpBatch = 1 }})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)
	big := string(make([]byte, 64<<10))
	for i := range 50 { // more than the flow-control window: the server is still sending when we cancel
		require.NoError(t, store(ctx, c, fmt.Sprint("k", i), big))
	}
	dctx, cancel := context.WithCancel(ctx)
	stream, err := c.Dump(dctx, &rpc.DumpReq{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	cancel()
	for err == nil {
		_, err = stream.Recv()
	}
	assert.Equal(t, codes.Canceled, status.Code(err), "got %v", err)

	assert.Len(t, dumpAll(t, ctx, c), 50, "the server keeps serving")
}

func retryInfo(err error) *errdetails.RetryInfo {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}

func noRetry() client.Options { return client.Options{Retry: retryOnce} }

func TestGlobalRateLimitRefusesWithRetryInfo(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.Rate, c.Limits.Burst = 0.001, 2 }})
	c := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, noRetry()))
	ctx := testContext(t)

	// The first call makes the token known (a caller not known yet draws
	// on the unauthenticated budget); then the two of the burst pass.
	var last error
	for range 4 {
		last = store(ctx, c, "k", "v")
	}
	assert.Equal(t, codes.ResourceExhausted, status.Code(last))
	assert.Contains(t, status.Convert(last).Message(), "service is over rate limit")
	require.NotNil(t, retryInfo(last), "rate limits say when to retry")
}

func TestOneTenantsFloodDoesNotStarveAnother(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.TenantRate, c.Limits.TenantBurst = 0.001, 3 }})
	flood := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, noRetry()))
	calm := rpc.NewCacheClient(dialTarget(t, st, st.Target(), "other", noRetry()))
	ctx := testContext(t)

	var refused int
	for range 10 {
		if err := store(ctx, flood, "k", "v"); status.Code(err) == codes.ResourceExhausted {
			refused++
			require.NotNil(t, retryInfo(err))
		}
	}
	assert.Equal(t, 7, refused, "the flooding tenant gets its burst, then is refused")
	assert.NoError(t, store(ctx, calm, "k", "v"), "the other tenant is unaffected")
}

func TestHealthAndReflection(t *testing.T) {
	st := startStack(t, stackOpts{})
	conn := dialTarget(t, st, st.CacheAddrs[0], "", client.Options{})
	ctx := testContext(t)

	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err, "health needs no token")
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.Status)

	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
	r, err := rs.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range r.GetListServicesResponse().Service {
		names = append(names, s.Name)
	}
	assert.Contains(t, names, rpc.Cache_ServiceDesc.ServiceName)
	assert.Contains(t, names, "grpc.health.v1.Health")
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func TestMaxConnectionAgeMakesClientsReconnect(t *testing.T) {
	st := startStack(t, stackOpts{})
	cfg := server.DefaultCacheConfig()
	cfg.Logger, cfg.MaxConnectionAge, cfg.MaxConnectionAgeGrace = quiet, 50*time.Millisecond, time.Second
	cfg.ReplicaID = "aging"
	cfg.Accounts.Addr, cfg.Accounts.TLS = st.AccountsAddr, mustClientTLS(t, st)
	cfg.Auth.TTL = time.Hour
	srv, err := server.NewCache(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cl := &countingListener{Listener: lis}
	go srv.Serve(cl)

	conn, err := client.Dial(lis.Addr().String(), client.Options{Token: tok, AllowInsecureToken: true})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := rpc.NewCacheClient(conn)
	ctx := testContext(t)
	require.Eventually(t, func() bool {
		require.NoError(t, store(ctx, c, "k", "v"))
		return cl.n.Load() >= 2
	}, 5*time.Second, 10*time.Millisecond, "the server closed the aged connection and the client reconnected")
}

func TestRingHashSendsEachKeyToOneReplica(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	c := cacheClient(t, st, tok)
	ctx := client.AskReplica(testContext(t))

	seen := map[string]int{}
	for i := range 30 {
		k := fmt.Sprint("key-", i)
		r := replicaOf(t, func(o grpc.CallOption) error { return store(ctx, c, k, "v", o) })
		for range 3 {
			assert.Equal(t, r, replicaOf(t, func(o grpc.CallOption) error { _, err := get(ctx, c, k, o); return err }), "key %s", k)
		}
		seen[r]++
	}
	assert.Len(t, seen, 3, "keys spread over every replica: %v", seen)
	total := 0
	for _, cs := range st.Caches {
		total += cs.Service().Data().Len(tok)
	}
	assert.Equal(t, 30, total, "each key is stored once")
}

func TestReplicaStoppedMidTrafficLosesNothingElsewhere(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 3})
	c := cacheClient(t, st, tok)
	ctx := client.AskReplica(testContext(t))

	var mu sync.Mutex
	stored := map[string]string{} // key -> replica that acknowledged it
	var wg sync.WaitGroup
	half := make(chan struct{})
	var halfOnce sync.Once
	for w := range 4 {
		wg.Go(func() {
			for i := range 40 {
				if i == 20 {
					halfOnce.Do(func() { close(half) })
				}
				k := fmt.Sprintf("w%d-%d", w, i)
				r := replicaOf(t, func(o grpc.CallOption) error { return store(ctx, c, k, "v", o) })
				mu.Lock()
				stored[k] = r
				mu.Unlock()
			}
		})
	}
	<-half
	st.Caches[1].Stop() // cache-2 dies while Stores are in flight
	wg.Wait()

	for k, r := range stored {
		if r == "cache-2" {
			continue
		}
		got, err := get(ctx, c, k)
		require.NoError(t, err, "key %s acknowledged by %s", k, r)
		assert.Equal(t, "v", got)
	}
}

func TestGracefulShutdownDuringDumpFinishesTheStream(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) { c.Limits.Sizes.DumpBatch = 1 }})
	conn := dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{})
	c := rpc.NewCacheClient(conn)
	ctx := testContext(t)
	big := string(make([]byte, 64<<10))
	for i := range 40 {
		require.NoError(t, store(ctx, c, fmt.Sprint("k", i), big))
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watch, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.Status)

	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	shut := make(chan error, 1)
	go func() { shut <- st.Caches[0].Shutdown(ctx) }()
	next, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.Status, "draining shows in health")
	stopWatch() // a Watch is a stream in flight too: graceful stop waits for it

	n := 1
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		n++
	}
	assert.Equal(t, 40, n, "the Dump in flight finished")
	require.NoError(t, <-shut)
}

func TestReplicaNamesItselfOnlyWhenAsked(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 1})
	c := cacheClient(t, st, tok)
	ctx := testContext(t)

	var md metadata.MD
	require.NoError(t, store(ctx, c, "k", "v", grpc.Header(&md)))
	assert.Empty(t, md.Get(client.ReplicaHeader), "not asked, not told")
	assert.Equal(t, "cache-1", replicaOf(t, func(o grpc.CallOption) error {
		_, err := get(client.AskReplica(ctx), c, "k", o)
		return err
	}))
}

// A caller without a valid token learns nothing else, not even the
// replica's name, on a unary call and on a stream alike. (The stream chain
// once set the header before authentication; grpc-go drops the header of a
// stream that fails before sending any, so it never showed, but the order
// is now the unary one: see TestUnaryAndStreamChainsHaveOneOrder.)
func TestACallerWithoutAValidTokenIsNotToldTheReplica(t *testing.T) {
	st := startStack(t, stackOpts{replicas: 1})
	c := cacheClient(t, st, "nobody")
	ctx := client.AskReplica(testContext(t))

	var hdr, trl metadata.MD
	_, err := get(ctx, c, "k", grpc.Header(&hdr), grpc.Trailer(&trl))
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Empty(t, hdr.Get(client.ReplicaHeader), "unary: not told")
	assert.Empty(t, trl.Get(client.ReplicaHeader), "unary: not told")

	stream, err := c.Dump(ctx, &rpc.DumpReq{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	hdr, _ = stream.Header()
	assert.Empty(t, hdr.Get(client.ReplicaHeader), "stream: not told")
	assert.Empty(t, stream.Trailer().Get(client.ReplicaHeader), "stream: not told")
}
