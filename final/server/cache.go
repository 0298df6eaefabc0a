package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"grpcworkshop.example/final/accountsclient"
	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/interceptor"
	"grpcworkshop.example/final/ratelimit"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/telemetry"
)

// CacheConfig configures one cache replica. Start from DefaultCacheConfig.
type CacheConfig struct {
	Common

	// ReplicaID names this replica: the x-replica response header, logs,
	// and the prefix of its lease at Accounts (which adds random bytes per
	// process, so processes that share a name never share a lease); ""
	// means the hostname.
	ReplicaID string

	// Accounts is an existing connection to the Accounts service; if nil,
	// AccountsAddr is dialled with AccountsTLS (a client certificate, for
	// mutual TLS; nil means plaintext).
	Accounts     grpc.ClientConnInterface
	AccountsAddr string
	AccountsTLS  *tls.Config

	// AuthTTL is how long a token's account is cached: a revoked token works
	// for at most this long; 0: every call asks Accounts.
	AuthTTL time.Duration
	// AuthStale is how long past AuthTTL a known token keeps working while
	// Accounts cannot be reached; AuthNegativeTTL how long a token Accounts
	// refused is refused without asking; 0: neither.
	AuthStale, AuthNegativeTTL time.Duration
	// AccountsTimeout bounds every lookup and reservation, whatever the
	// caller's deadline, so a hung Accounts fails calls fast (Unavailable
	// with a RetryInfo); AccountsRetryAfter is how long a replica then
	// leaves Accounts alone (known tokens are served stale meanwhile),
	// and the retry delay it reports. 0: no bound, no pause.
	AccountsTimeout, AccountsRetryAfter time.Duration
	// AccountsKeepaliveTime and AccountsKeepaliveTimeout notice an Accounts
	// cut off over an open connection (its host gone, or a Service still
	// sending the connection to a dead pod): the connection is closed, the
	// address resolved again and a new Accounts reached, instead of every
	// call timing out until the kernel gives up (about 15 minutes). As
	// client.KeepaliveParams: 0 means the client's defaults, an interval
	// below client.MinKeepaliveTime is an error.
	AccountsKeepaliveTime, AccountsKeepaliveTimeout time.Duration
	// LeaseInterval is how often the replica reports its holdings to
	// Accounts, renewing its lease; it must be positive.
	LeaseInterval time.Duration

	// Limits bound keys and values (zero fields: cache.DefaultLimits).
	Limits cache.Limits

	// Rate limits all calls to this replica and TenantRate each tenant, in
	// calls per second; 0 or rate.Inf: no limit. Burst and TenantBurst
	// allow that many calls at once; 0: a tenth (a fifth for tenants) of a
	// second's worth.
	Rate, TenantRate   rate.Limit
	Burst, TenantBurst int
	// UnauthRate limits, apart from Rate, the calls of callers the replica
	// does not know yet (no token, or one not looked up) and reflection;
	// so a flood without a valid token cannot use up Rate. Health checks
	// are never limited. 0: no limit; UnauthBurst 0: a tenth of a second's.
	UnauthRate  rate.Limit
	UnauthBurst int

	// Web is the optional HTTP listener for browsers and REST (off when
	// Web.Addr is empty).
	Web WebConfig

	// Peers is every replica, this one included, as clients dial them (a
	// list of host:port or dns:///name:port): a keyed call for a key that
	// another replica owns is forwarded to it, and a Dump gathers from every
	// replica. "": this replica serves only what it holds. Self is this
	// replica's address among them ("": found from the listening address);
	// PeerTLS verifies the peers (nil: plaintext); PeerDialOptions are added
	// to the connections to them (stats handlers).
	Peers, Self     string
	PeerTLS         *tls.Config
	PeerDialOptions []grpc.DialOption
	// PeerKeepaliveTime and PeerKeepaliveTimeout notice a peer cut off by
	// the network over an open connection, so calls forwarded to it move
	// to the next replica in seconds (client.Options' KeepaliveTime and
	// KeepaliveTimeout). 0: the client's defaults; keepalive to peers is
	// never off, a cut peer must be noticed.
	PeerKeepaliveTime, PeerKeepaliveTimeout time.Duration
}

// DefaultCacheConfig is a replica's configuration when no flag is given.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{
		Common:        defaultCommon("localhost:5051", "localhost:9051"),
		AccountsAddr:  "localhost:5050",
		AuthTTL:       5 * time.Second,
		LeaseInterval: 5 * time.Second,
		Limits:        cache.DefaultLimits(),
		Rate:          5000,
		TenantRate:    1000,
		// Accounts trouble degrades a replica, see "Admission and Accounts
		// trouble" in final/README.md.
		AuthStale:            5 * time.Minute,
		AuthNegativeTTL:      time.Second,
		AccountsTimeout:      time.Second,
		AccountsRetryAfter:   500 * time.Millisecond,
		UnauthRate:           500,
		PeerKeepaliveTime:    client.DefaultKeepaliveTime,
		PeerKeepaliveTimeout: client.DefaultKeepaliveTimeout,
		// Accounts is a server like a replica, dialled like one.
		AccountsKeepaliveTime:    client.DefaultKeepaliveTime,
		AccountsKeepaliveTimeout: client.DefaultKeepaliveTimeout,
	}
}

// limit turns a rate and burst into a limiter's: no limit for 0, and a
// burst of `seconds` of calls for burst 0.
func limit(r rate.Limit, burst int, seconds float64) (rate.Limit, int) {
	if r <= 0 || r == rate.Inf {
		return rate.Inf, 0
	}
	if burst <= 0 {
		burst = max(1, int(float64(r)*seconds))
	}
	return r, burst
}

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

// NewCache builds a cache replica. It starts nothing and does not contact
// Accounts yet: Serve or Run does.
func NewCache(cfg CacheConfig) (*CacheServer, error) {
	if cfg.ReplicaID == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("replica id: %w", err)
		}
		cfg.ReplicaID = h
	}
	if cfg.LeaseInterval <= 0 {
		return nil, fmt.Errorf("lease interval must be positive, got %s", cfg.LeaseInterval)
	}
	log := cfg.logger().With("replica", cfg.ReplicaID)
	var metrics *telemetry.Metrics // nil-safe: telemetry off
	if cfg.Telemetry != nil {
		metrics = cfg.Telemetry.Metrics
	}

	var closers []func() error
	conn := cfg.Accounts
	if conn == nil {
		if cfg.AccountsAddr == "" {
			return nil, fmt.Errorf("accounts: no address")
		}
		ka, err := client.KeepaliveParams(cfg.AccountsKeepaliveTime, cfg.AccountsKeepaliveTimeout)
		if err != nil {
			return nil, fmt.Errorf("accounts: %w", err)
		}
		creds := insecure.NewCredentials()
		if cfg.AccountsTLS != nil {
			creds = credentials.NewTLS(cfg.AccountsTLS)
		}
		dialOpts := []grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			// Reach a returning Accounts within about a second: gRPC's
			// default backoff grows to 120s, and a connection attempt to a
			// hung one would wait 20s.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: 2 * time.Second,
			}),
			grpc.WithKeepaliveParams(ka),
			grpc.WithChainUnaryInterceptor(client.LogUnaryClient(log.With("peer", "accounts"))),
		}
		if cfg.Telemetry != nil {
			dialOpts = append(dialOpts, cfg.Telemetry.DialOption())
		}
		cc, err := grpc.NewClient(cfg.AccountsAddr, dialOpts...)
		if err != nil {
			return nil, fmt.Errorf("dial accounts: %w", err)
		}
		conn, closers = cc, append(closers, cc.Close)
	}
	accounts := accountsclient.New(conn)
	accounts.Timeout, accounts.RetryAfter = cfg.AccountsTimeout, cfg.AccountsRetryAfter

	var authority cache.Authority = accounts
	if metrics != nil {
		authority = meteredAuthority{accounts, metrics}
	}
	c := cache.New(authority, cfg.ReplicaID, cfg.Limits, log)
	limits := c.Limits()
	// The caller's context reaches Accounts: its deadline (capped) propagates.
	authn := auth.NewAuthenticator(accounts.Account, auth.CacheConfig{
		TTL: cfg.AuthTTL, Stale: cfg.AuthStale, NegativeTTL: cfg.AuthNegativeTTL,
		LookupTimeout: cfg.AccountsTimeout, RetryAfter: cfg.AccountsRetryAfter,
	})
	// After authentication: the tenant goes on the call's log line and span.
	noteUnary, noteStream := telemetry.TenantInterceptors(tenantOf)
	if metrics != nil {
		authn.Observe = metrics.AuthLookup
	}
	tenantRate, tenantBurst := limit(cfg.TenantRate, cfg.TenantBurst, 0.2)
	perTenant := ratelimit.NewPerTenant(tenantRate, tenantBurst)

	var fwd *forward.Forwarder
	if cfg.Peers != "" {
		fc := forward.Config{
			Peers: cfg.Peers, Self: cfg.Self, ID: cfg.ReplicaID, TLS: cfg.PeerTLS, Logger: log, DialOptions: cfg.PeerDialOptions,
			KeepaliveTime: cfg.PeerKeepaliveTime, KeepaliveTimeout: cfg.PeerKeepaliveTimeout,
		}
		if cfg.Telemetry != nil {
			// The hop is a span of its own, the owner's call its child.
			fc.DialOptions = append(fc.DialOptions, cfg.Telemetry.DialOption())
			fc.Traced = cfg.Telemetry.TracerProvider() != nil
		}
		f, err := forward.New(fc)
		if err != nil {
			for _, c := range closers {
				c()
			}
			return nil, err
		}
		fwd, closers = f, append(closers, f.Close)
	}
	unary := []grpc.UnaryServerInterceptor{
		telemetry.NoteUnary(),
		interceptor.LogUnaryServer(log),
		apierr.UnaryServerInterceptor(log),
		interceptor.RecoverUnary(),
		interceptor.DeadlineUnary(cfg.MaxDeadline),
		// The token is judged first: a caller without one learns nothing else.
		authn.UnaryInterceptor(),
		noteUnary,
		rejectMalformedUnary(),
	}
	// Forwarding comes after the deadline cap (the owner gets the capped
	// deadline), the token and the message's form (a bad call costs no
	// hop), and before the rest, which the owner does.
	if fwd != nil {
		unary = append(unary, fwd.Unary())
	}
	unary = append(append(unary,
		interceptor.ReplicaUnary(cfg.ReplicaID),
		interceptor.DryRunUnary(),
		perTenant.Unary(),
	), cfg.Unary...)
	stream := append([]grpc.StreamServerInterceptor{
		telemetry.NoteStream(),
		interceptor.LogStreamServer(log),
		apierr.StreamServerInterceptor(log),
		interceptor.RecoverStream(),
		interceptor.ReplicaStream(cfg.ReplicaID),
		interceptor.DeadlineStream(cfg.MaxDeadline),
		authn.StreamInterceptor(),
		noteStream,
		rejectMalformedStream(),
		interceptor.DryRunStream(),
		perTenant.Stream(),
	}, cfg.Stream...)
	r, burst := limit(cfg.Rate, cfg.Burst, 0.1)
	ur, uburst := limit(cfg.UnauthRate, cfg.UnauthBurst, 0.1)
	// Before a call's message is read: its token's form, and whose budget
	// it draws on. The HTTP listener runs the same tap (web.go).
	tap := ratelimit.AdmissionTap(ratelimit.Budgets{
		Paying: r, PayingBurst: burst, Unauthenticated: ur, UnauthenticatedBurst: uburst,
	}, auth.Public, authn.Admit)
	opts := append(cfg.options(),
		// gRPC refuses a message over this before decoding it, with a bare
		// ResourceExhausted; well above the largest Store, so that a value
		// up to four times too large still gets the domain's
		// InvalidArgument with BadRequest.
		grpc.MaxRecvMsgSize(TransportLimit(limits)),
		// A key that is not UTF-8 reaches the domain's key check
		// (InvalidArgument), not Internal.
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)
	srv := newServer(&cfg.Common, log, opts, tap, []string{rpc.Cache_ServiceDesc.ServiceName}, func(gs *grpc.Server) {
		rpc.RegisterCacheServer(gs, &cacheService{cache: c, fwd: fwd, metrics: metrics})
	})
	if err := metrics.Observe(append(storeGauges(c.Data()), srv.drainingGauge())...); err != nil {
		return nil, err
	}
	srv.closers = closers
	if fwd != nil {
		srv.listening = func(a net.Addr) { fwd.Listening(a); fwd.Start() }
	}
	srv.background = func(ctx context.Context) { c.Run(ctx, cfg.LeaseInterval) }
	srv.release = c.Release
	// The HTTP path skips grpc's tap handles: it gets the same tap.
	wl, err := buildWeb(cfg.Web, srv, cfg.Telemetry.Tap(tap), limits.MaxValueBytes+limits.MaxKeyBytes)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	srv.web = wl
	return &CacheServer{Server: srv, cache: c, fwd: fwd, unary: unary}, nil
}

// TransportLimit is the largest request message a replica reads: four
// times the largest Store, plus room for the message's framing.
func TransportLimit(l cache.Limits) int {
	return 4*(l.MaxValueBytes+l.MaxKeyBytes) + 1024
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
	if err := s.cache.Store(ctx, tenant, req.Key, req.Val, interceptor.IsDryRun(ctx)); err != nil {
		return nil, err
	}
	return &rpc.StoreResp{}, nil
}

func (s *cacheService) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	tenant, err := auth.TenantFrom(ctx)
	if err != nil {
		return nil, err
	}
	val, err := s.cache.Get(tenant, req.Key)
	if err != nil {
		return nil, err
	}
	return &rpc.GetResp{Val: val}, nil
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
