package server

import (
	"time"

	"google.golang.org/grpc"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/interceptor"
	"grpcworkshop/final/rpc"
)

// AccountsConfig configures the Accounts service. Use a TLS config that
// requires client certificates (tlsutil.ServerConfig with a client CA):
// only cache replicas may reserve slots.
type AccountsConfig struct {
	Common

	// Directory is the accounts served; nil means the embedded defaults.
	Directory *accounts.Directory
	// LeaseTTL is how long a replica's slots outlive its last report.
	// Default 15s (three missed reports at the default LeaseInterval).
	LeaseTTL time.Duration
}

// AccountsServer is a running Accounts service.
type AccountsServer struct {
	*Server
	svc *accounts.Service
}

// Service is the Accounts service inside the server (SetDirectory, Ledger).
func (s *AccountsServer) Service() *accounts.Service { return s.svc }

// NewAccounts builds the Accounts server.
func NewAccounts(cfg AccountsConfig) (*AccountsServer, error) {
	cfg.defaults()
	if cfg.Directory == nil {
		cfg.Directory = accounts.Default()
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	svc := accounts.NewService(cfg.Directory, cfg.LeaseTTL)
	log := cfg.Logger.With("service", "accounts")
	opts := append(cfg.options(),
		grpc.ChainUnaryInterceptor(
			interceptor.LogUnaryServer(log),
			interceptor.RecoverUnary(log),
			interceptor.DeadlineUnary(cfg.MaxDeadline),
		),
		grpc.ChainUnaryInterceptor(cfg.Unary...),
		grpc.ChainStreamInterceptor(
			interceptor.LogStreamServer(log),
			interceptor.RecoverStream(log),
		),
	)
	srv := newServer(&cfg.Common, opts, []string{rpc.Accounts_ServiceDesc.ServiceName}, func(gs *grpc.Server) {
		rpc.RegisterAccountsServer(gs, svc)
	})
	srv.log = log
	return &AccountsServer{Server: srv, svc: svc}, nil
}
