package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/auth"
	"grpcworkshop/final/cache"
	"grpcworkshop/final/interceptor"
	"grpcworkshop/final/ratelimit"
	"grpcworkshop/final/rpc"
)

// CacheConfig configures one cache replica. Zero values mean defaults.
type CacheConfig struct {
	Common

	// ReplicaID names this replica: its lease at Accounts and the x-replica
	// response header. It must be unique and stable across restarts (a pod
	// name); default hostname.
	ReplicaID string

	// Accounts is an existing connection to the Accounts service; if nil,
	// AccountsAddr is dialled with AccountsTLS (a client certificate, for
	// mutual TLS; nil means plaintext).
	Accounts     grpc.ClientConnInterface
	AccountsAddr string
	AccountsTLS  *tls.Config

	// AuthTTL is how long a token's account is cached: a revoked token works
	// for at most this long. Default 5s.
	AuthTTL time.Duration
	// LeaseInterval is how often the replica reports its holdings to
	// Accounts (renewing its lease). Default 5s.
	LeaseInterval time.Duration

	Limits cache.Limits

	// Rate and Burst limit all calls to this replica (default 5000/s, burst
	// 500); TenantRate and TenantBurst limit each tenant (default 1000/s,
	// burst 200). rate.Inf disables a limit.
	Rate, TenantRate   rate.Limit
	Burst, TenantBurst int
}

// CacheServer is a running cache replica.
type CacheServer struct {
	*Server
	svc   *cache.Service
	unary []grpc.UnaryServerInterceptor
}

// Service is the cache service inside the server.
func (s *CacheServer) Service() *cache.Service { return s.svc }

// UnaryInterceptors are the server's unary interceptors, outermost first
// (for benchmarks of their cost).
func (s *CacheServer) UnaryInterceptors() []grpc.UnaryServerInterceptor { return s.unary }

// NewCache builds a cache replica. It does not contact Accounts yet.
func NewCache(cfg CacheConfig) (*CacheServer, error) {
	cfg.defaults()
	if cfg.ReplicaID == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("replica id: %w", err)
		}
		cfg.ReplicaID = h
	}
	if cfg.AuthTTL <= 0 {
		cfg.AuthTTL = 5 * time.Second
	}
	if cfg.LeaseInterval <= 0 {
		cfg.LeaseInterval = 5 * time.Second
	}
	if cfg.Rate == 0 {
		cfg.Rate, cfg.Burst = 5000, 500
	}
	if cfg.TenantRate == 0 {
		cfg.TenantRate, cfg.TenantBurst = 1000, 200
	}
	if cfg.Limits.MaxKeyBytes <= 0 {
		cfg.Limits.MaxKeyBytes = 256
	}
	if cfg.Limits.MaxValueBytes <= 0 {
		cfg.Limits.MaxValueBytes = 1 << 20
	}
	log := cfg.Logger.With("replica", cfg.ReplicaID)

	var closers []func() error
	conn := cfg.Accounts
	if conn == nil {
		if cfg.AccountsAddr == "" {
			return nil, fmt.Errorf("accounts: no address")
		}
		creds := insecure.NewCredentials()
		if cfg.AccountsTLS != nil {
			creds = credentials.NewTLS(cfg.AccountsTLS)
		}
		cc, err := grpc.NewClient(cfg.AccountsAddr,
			grpc.WithTransportCredentials(creds),
			grpc.WithChainUnaryInterceptor(interceptor.LogUnaryClient(log.With("peer", "accounts"))),
		)
		if err != nil {
			return nil, fmt.Errorf("dial accounts: %w", err)
		}
		conn, closers = cc, append(closers, cc.Close)
	}
	accounts := rpc.NewAccountsClient(conn)

	svc := cache.NewService(accounts, cfg.ReplicaID, cfg.Limits, log)
	authn := auth.NewAuthenticator(func(ctx context.Context, token string) (*rpc.Account, error) {
		// The caller's context: its deadline (capped) propagates to Accounts.
		resp, err := accounts.GetByToken(ctx, &rpc.GetByTokenReq{Token: token})
		if err != nil {
			return nil, apierr.FromAccounts(err)
		}
		return resp.GetAccount(), nil
	}, cfg.AuthTTL)
	perTenant := ratelimit.NewPerTenant(cfg.TenantRate, cfg.TenantBurst)

	unary := append([]grpc.UnaryServerInterceptor{
		interceptor.LogUnaryServer(log),
		interceptor.RecoverUnary(log),
		interceptor.ReplicaUnary(cfg.ReplicaID),
		interceptor.DeadlineUnary(cfg.MaxDeadline),
		interceptor.DryRunUnary(),
		authn.UnaryInterceptor(),
		perTenant.Unary(),
	}, cfg.Unary...)
	opts := append(cfg.options(),
		grpc.InTapHandle(ratelimit.Tap(cfg.Rate, cfg.Burst)),
		// Messages larger than a maximal Store are refused before decoding.
		grpc.MaxRecvMsgSize(cfg.Limits.MaxValueBytes+cfg.Limits.MaxKeyBytes+1024),
		// A key that is not UTF-8 reaches checkKey (InvalidArgument), not Internal.
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(
			interceptor.LogStreamServer(log),
			interceptor.RecoverStream(log),
			interceptor.ReplicaStream(cfg.ReplicaID),
			interceptor.DeadlineStream(cfg.MaxDeadline),
			interceptor.DryRunStream(),
			authn.StreamInterceptor(),
			perTenant.Stream(),
		),
	)
	srv := newServer(&cfg.Common, opts, []string{rpc.Cache_ServiceDesc.ServiceName}, func(gs *grpc.Server) {
		rpc.RegisterCacheServer(gs, svc)
	})
	srv.log = log
	srv.closers = closers
	ctx, cancel := context.WithCancel(context.Background())
	srv.stopBg = cancel
	go svc.RunLease(ctx, cfg.LeaseInterval)
	return &CacheServer{Server: srv, svc: svc, unary: unary}, nil
}
