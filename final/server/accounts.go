package server

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/apierr"
	"grpcworkshop/final/interceptor"
	"grpcworkshop/final/rpc"
)

// AccountsConfig configures the Accounts service. Start from
// DefaultAccountsConfig, and use a TLS config that requires client
// certificates (tlsutil.ServerConfig with a client CA): only cache
// replicas may reserve slots.
type AccountsConfig struct {
	Common

	// Directory is the accounts served; nil means the embedded defaults.
	Directory *accounts.Directory
	// LeaseTTL is how long a replica's slots outlive its last report.
	LeaseTTL time.Duration
}

// DefaultAccountsConfig is the Accounts service's configuration when no
// flag is given.
func DefaultAccountsConfig() AccountsConfig {
	return AccountsConfig{
		Common:   defaultCommon("localhost:5050"),
		LeaseTTL: 15 * time.Second, // three missed reports at the default lease interval
	}
}

// AccountsServer is the Accounts service.
type AccountsServer struct {
	*Server
	svc *accounts.Service
}

// Service is the Accounts domain inside the server (SetDirectory, Ledger).
func (s *AccountsServer) Service() *accounts.Service { return s.svc }

// NewAccounts builds the Accounts server.
func NewAccounts(cfg AccountsConfig) (*AccountsServer, error) {
	if cfg.Directory == nil {
		cfg.Directory = accounts.Default()
	}
	svc := accounts.NewService(cfg.Directory, cfg.LeaseTTL)
	log := cfg.logger().With("service", "accounts")
	opts := append(cfg.options(),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{
			interceptor.LogUnaryServer(log),
			apierr.UnaryServerInterceptor(log),
			interceptor.RecoverUnary(),
			interceptor.DeadlineUnary(cfg.MaxDeadline),
		}, cfg.Unary...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{
			interceptor.LogStreamServer(log),
			apierr.StreamServerInterceptor(log),
			interceptor.RecoverStream(),
		}, cfg.Stream...)...),
	)
	srv := newServer(&cfg.Common, log, opts, []string{rpc.Accounts_ServiceDesc.ServiceName}, func(gs *grpc.Server) {
		rpc.RegisterAccountsServer(gs, &accountsService{svc: svc})
	})
	return &AccountsServer{Server: srv, svc: svc}, nil
}

// accountsService is the Accounts service on the wire.
type accountsService struct {
	rpc.UnimplementedAccountsServer
	svc *accounts.Service
}

func (s *accountsService) GetByToken(ctx context.Context, req *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	a, err := s.svc.Account(req.Token)
	if err != nil {
		return nil, err
	}
	return &rpc.GetByTokenResp{Account: &rpc.Account{Tenant: a.Tenant, MaxCacheKeys: a.MaxCacheKeys}}, nil
}

func (s *accountsService) Reserve(ctx context.Context, req *rpc.ReserveReq) (*rpc.ReserveResp, error) {
	if err := s.svc.Reserve(req.LeaseId, req.Tenant, req.DryRun); err != nil {
		return nil, err
	}
	return &rpc.ReserveResp{}, nil
}

func (s *accountsService) Lease(ctx context.Context, req *rpc.LeaseReq) (*rpc.LeaseResp, error) {
	admitted, err := s.svc.Lease(req.LeaseId, req.Holdings)
	if err != nil {
		return nil, err
	}
	return &rpc.LeaseResp{Admitted: admitted, TtlMillis: s.svc.Ledger().TTL().Milliseconds()}, nil
}

func (s *accountsService) Release(ctx context.Context, req *rpc.ReleaseReq) (*rpc.ReleaseResp, error) {
	if err := s.svc.Release(req.LeaseId); err != nil {
		return nil, err
	}
	return &rpc.ReleaseResp{}, nil
}
