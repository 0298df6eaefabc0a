package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/interceptor"
	"grpcworkshop.example/final/ratelimit"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/telemetry"
)

// CacheServer is a cache replica.
type CacheServer struct {
	*Server
	cache *cache.Cache
	fwd   *forward.Forwarder
	unary []grpc.UnaryServerInterceptor
}

// Forwarded is how many calls this replica has forwarded to the replica
// owning their key (0 without Peers).
func (s *CacheServer) Forwarded() int64 {
	if s.fwd == nil {
		return 0
	}
	return s.fwd.Count()
}

// Service is the cache's domain inside the server.
func (s *CacheServer) Service() *cache.Cache { return s.cache }

// UnaryInterceptors are the server's unary interceptors, outermost first
// (for benchmarks of their cost).
func (s *CacheServer) UnaryInterceptors() []grpc.UnaryServerInterceptor { return s.unary }

// NewCache builds a cache replica from parts built in their own
// constructors (parts.go) and one interceptor table (cacheChain). It
// starts nothing and does not contact Accounts yet: Serve or Run does.
func NewCache(cfg CacheConfig) (_ *CacheServer, err error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	log := cfg.logger().With("replica", cfg.ReplicaID)
	metrics := cfg.metrics()
	var closers closers
	defer func() {
		if err != nil {
			closers.close()
		}
	}()

	conn, err := dialAccounts(cfg.Accounts, cfg.Telemetry, log, &closers)
	if err != nil {
		return nil, err
	}
	accounts := newAccountsClient(conn, cfg.Accounts)
	c := cache.New(meter(accounts, metrics), leaseName(cfg.Accounts.TLS, cfg.ReplicaID), cfg.Limits.Sizes, log)
	authn := newAuthenticator(accounts, cfg.Auth, cfg.Accounts, metrics)
	fwd, err := newForwarder(cfg.Peers, cfg.ReplicaID, cfg.Telemetry, log, &closers)
	if err != nil {
		return nil, err
	}
	tap := admissionTap(cfg.Limits, authn)
	chain := cacheChain(cfg, log, authn, fwd, c)
	opts := append(append(cfg.options(), cacheOptions(c.Limits())...), chain.options(&cfg.Common)...)
	srv := newServer(&cfg.Common, log, opts, tap, []string{rpc.Cache_ServiceDesc.ServiceName}, func(gs *grpc.Server) {
		rpc.RegisterCacheServer(gs, &cacheService{cache: c, fwd: fwd, metrics: metrics})
	})
	if err := metrics.Observe(append(storeGauges(c.Data()), srv.drainingGauge())...); err != nil {
		return nil, err
	}
	// The HTTP path skips grpc's tap handles: it gets the same tap.
	if srv.web, err = buildWeb(cfg.HTTP, srv, cfg.Telemetry.Tap(tap), c.Limits().MaxValueBytes+c.Limits().MaxKeyBytes); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	srv.closers = closers
	if fwd != nil {
		srv.listening = func(a net.Addr) { fwd.Listening(a); fwd.Start() }
	}
	srv.background = func(ctx context.Context) { c.Run(ctx, cfg.Accounts.LeaseInterval) }
	srv.release = c.Release
	return &CacheServer{Server: srv, cache: c, fwd: fwd, unary: chain.unary(cfg.Unary)}, nil
}

// cacheChain is the replica's interceptor table, outermost first. The
// token is judged before anything about the call is told (a caller
// without one learns nothing else, not even the replica's name).
// Forwarding comes after the deadline cap (the owner gets the capped
// deadline), the token and the message's form (a bad call costs no hop),
// and before the rest, which the owner does: the replica header names the
// replica that served the call. Streams are not forwarded by an
// interceptor (Dump gathers from every replica in its handler).
func cacheChain(cfg CacheConfig, log *slog.Logger, authn *auth.Authenticator, fwd *forward.Forwarder, sizes *cache.Cache) chain {
	noteUnary, noteStream := telemetry.TenantInterceptors(tenantOf)
	tenantRate, tenantBurst := limit(cfg.Limits.TenantRate, cfg.Limits.TenantBurst, 0.2)
	// A batch costs the tenant one call per key.
	perTenant := ratelimit.NewPerTenant(tenantRate, tenantBurst).Cost(batchKeys)
	c := chain{
		{"telemetry", telemetry.NoteUnary(), telemetry.NoteStream()},
		{"log", interceptor.LogUnaryServer(log), interceptor.LogStreamServer(log)},
		{"errors", apierr.UnaryServerInterceptor(log), apierr.StreamServerInterceptor(log)},
		{"recover", interceptor.RecoverUnary(), interceptor.RecoverStream()},
		{"deadline", interceptor.DeadlineUnary(cfg.MaxDeadline), interceptor.DeadlineStream(cfg.MaxDeadline)},
		{"auth", authn.UnaryInterceptor(), authn.StreamInterceptor()},
		// After authentication: the tenant goes on the call's log line and span.
		{"tenant", noteUnary, noteStream},
		{"malformed", rejectMalformedUnary(), rejectMalformedStream()},
		// A batch over the limits is refused whole, before forwarding
		// splits it among the replicas owning its keys.
		{"batch-limits", checkBatchUnary(sizes), nil},
	}
	if fwd != nil {
		c = append(c, link{"forward", fwd.Unary(), nil})
	}
	return append(c,
		link{"replica", interceptor.ReplicaUnary(cfg.ReplicaID), interceptor.ReplicaStream(cfg.ReplicaID)},
		link{"dry-run", interceptor.DryRunUnary(), interceptor.DryRunStream()},
		link{"tenant-rate", perTenant.Unary(), perTenant.Stream()},
	)
}

// cacheOptions are the replica's options about its messages.
func cacheOptions(limits cache.Limits) []grpc.ServerOption {
	return []grpc.ServerOption{
		// gRPC refuses a message over this before decoding it, with a bare
		// ResourceExhausted; well above the largest Store, so that a value
		// up to four times too large still gets the domain's
		// InvalidArgument with BadRequest.
		grpc.MaxRecvMsgSize(TransportLimit(limits)),
		// A key that is not UTF-8 reaches the domain's key check
		// (InvalidArgument), not Internal.
		grpc.ForceServerCodecV2(newRequestCodec()),
	}
}

// TransportLimit is the largest request message a replica reads: four
// times the largest Store or the largest batch with its items' framing,
// plus room for the message's framing.
func TransportLimit(l cache.Limits) int {
	return max(4*(l.MaxValueBytes+l.MaxKeyBytes), l.MaxBatchBytes+16*l.MaxBatchKeys) + 1024
}

// cacheService is the Cache service on the wire: it reads the tenant and
// dry run from the context (the interceptors put them there) and calls the
// domain. Its errors are mapped by apierr's interceptor.
type cacheService struct {
	rpc.UnimplementedCacheServer
	cache   *cache.Cache
	fwd     *forward.Forwarder // nil: no peers
	metrics *telemetry.Metrics
}

func (s *cacheService) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	tenant, err := auth.TenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	cond := cache.Cond{Revision: req.IfRevision, Absent: req.IfAbsent}
	rev, err := s.cache.StoreIf(ctx, tenant, req.Key, req.Val, cond, interceptor.IsDryRun(ctx))
	if err != nil {
		return nil, err
	}
	return &rpc.StoreResp{Revision: rev}, nil
}

func (s *cacheService) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	tenant, err := auth.TenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	val, rev, err := s.cache.GetRevision(tenant, req.Key)
	if err != nil {
		return nil, err
	}
	return &rpc.GetResp{Val: val, Revision: rev}, nil
}

func (s *cacheService) Dump(req *rpc.DumpReq, stream rpc.Cache_DumpServer) error {
	tenant, err := auth.TenantFrom(stream.Context())
	if err != nil {
		return err
	}
	item := &rpc.DumpItem{}
	sent := 0
	defer func() { s.metrics.Dumped(stream.Context(), sent) }()
	local := func() error {
		return s.cache.Dump(tenant, func(key string, val []byte) error {
			item.Key, item.Val = key, val
			if err := stream.Send(item); err != nil {
				return err // the client went away or the deadline passed
			}
			sent++
			return nil
		})
	}
	if s.fwd == nil {
		return local()
	}
	return s.fwd.Dump(stream.Context(), req, local, stream.Send)
}

// tenantOf is the tenant authentication put in ctx; calls that need no
// token (health, reflection) have none.
func tenantOf(ctx context.Context) (string, bool) {
	t, err := auth.TenantFrom(ctx)
	return t, err == nil
}
