package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/accounts/etcdledger"
	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/interceptor"
	"grpcworkshop.example/final/rpc"
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
	// MaxLeasesPerReplica caps the live leases of one replica identity
	// (its certificate): its own, and its restarts' until they lapse; so
	// a stolen certificate cannot fill the ledger. 0: no cap.
	MaxLeasesPerReplica int
	// LedgerPath is the quota ledger's file (bbolt, created if missing), so
	// a restart of Accounts keeps every replica's slots; "": in memory.
	LedgerPath string
	// RecoveryGrace, for a ledger in memory, is how long after starting
	// Accounts grants no slot while replicas re-register what they hold
	// (set it to LeaseTTL when Accounts may restart without its replicas);
	// 0: none, for a ledger that starts with its replicas (devstack, tests).
	RecoveryGrace time.Duration
	// LedgerEtcd, with Endpoints, keeps the ledger in etcd instead, shared
	// by every Accounts process pointed at it (LedgerPath and
	// RecoveryGrace are then unused; its TTL is LeaseTTL).
	LedgerEtcd etcdledger.EtcdOptions
}

// DefaultAccountsConfig is the Accounts service's configuration when no
// flag is given.
func DefaultAccountsConfig() AccountsConfig {
	return AccountsConfig{
		Common:     defaultCommon("localhost:5050", "localhost:9050"),
		LeaseTTL:   15 * time.Second, // three missed reports at the default lease interval
		LedgerEtcd: etcdledger.EtcdOptions{Prefix: etcdledger.DefaultEtcdPrefix},
		// One lease, and restarts: a crash loop faster than this many per
		// LeaseTTL waits for its old leases to lapse.
		MaxLeasesPerReplica: 4,
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
	var ledger accounts.LedgerEngine
	var err error
	if len(cfg.LedgerEtcd.Endpoints) > 0 {
		cfg.LedgerEtcd.TTL = cfg.LeaseTTL
		ledger, err = etcdledger.OpenEtcdLedger(cfg.LedgerEtcd)
	} else {
		ledger, err = accounts.OpenLedger(accounts.LedgerOptions{TTL: cfg.LeaseTTL, Path: cfg.LedgerPath, RecoveryGrace: cfg.RecoveryGrace, MaxLeasesPerOwner: cfg.MaxLeasesPerReplica})
	}
	if err != nil {
		return nil, err
	}
	svc := accounts.NewServiceWith(cfg.Directory, ledger)
	log := cfg.logger().With("service", "accounts")
	opts := append(cfg.options(), accountsChain(cfg.MaxDeadline, log).options(&cfg.Common)...)
	srv := newServer(&cfg.Common, log, opts, nil, []string{rpc.Accounts_ServiceDesc.ServiceName}, func(gs *grpc.Server) {
		rpc.RegisterAccountsServer(gs, &accountsService{svc: svc})
	})
	srv.closers = append(srv.closers, ledger.Close)
	if cfg.Telemetry != nil {
		if err := cfg.Telemetry.Metrics.Observe(srv.drainingGauge()); err != nil {
			return nil, err
		}
	}
	return &AccountsServer{Server: srv, svc: svc}, nil
}

// accountsChain is the Accounts server's interceptor table, outermost
// first: the same first links as a replica's (cacheChain). Accounts has
// no stream of its own; health and reflection are never capped.
func accountsChain(maxDeadline time.Duration, log *slog.Logger) chain {
	return chain{
		{"log", interceptor.LogUnaryServer(log), interceptor.LogStreamServer(log)},
		{"errors", apierr.UnaryServerInterceptor(log), apierr.StreamServerInterceptor(log)},
		{"recover", interceptor.RecoverUnary(), interceptor.RecoverStream()},
		{"deadline", interceptor.DeadlineUnary(maxDeadline), interceptor.DeadlineStream(maxDeadline)},
	}
}

// accountsService is the Accounts service on the wire.
type accountsService struct {
	rpc.UnimplementedAccountsServer
	svc *accounts.Service
}

func (s *accountsService) GetByToken(ctx context.Context, req *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	id, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := accounts.ReplicaName(id); id != "" && !ok {
		return nil, fault.Forbidden("%s is not a replica's identity: only replicas look tokens up", id)
	}
	a, err := s.svc.Account(req.Token)
	if err != nil {
		return nil, err
	}
	return &rpc.GetByTokenResp{Account: &rpc.Account{Tenant: a.Tenant, MaxCacheKeys: a.MaxCacheKeys, MaxCacheBytes: a.MaxCacheBytes}}, nil
}

func (s *accountsService) Reserve(ctx context.Context, req *rpc.ReserveReq) (*rpc.ReserveResp, error) {
	id, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.svc.Reserve(ctx, id, req.LeaseId, req.Tenant, req.Count, req.Least, req.Seq, req.DryRun)
	if err != nil {
		return nil, err
	}
	return &rpc.ReserveResp{Granted: n}, nil
}

func (s *accountsService) Lease(ctx context.Context, req *rpc.LeaseReq) (*rpc.LeaseResp, error) {
	id, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	admitted, err := s.svc.Lease(ctx, id, req.LeaseId, req.Holdings, req.Resolved, req.Report)
	if err != nil {
		return nil, err
	}
	return &rpc.LeaseResp{Admitted: admitted, TtlMillis: s.svc.Ledger().TTL().Milliseconds()}, nil
}

func (s *accountsService) Release(ctx context.Context, req *rpc.ReleaseReq) (*rpc.ReleaseResp, error) {
	id, err := callerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.Release(ctx, id, req.LeaseId); err != nil {
		return nil, err
	}
	return &rpc.ReleaseResp{}, nil
}

// callerIdentity is PeerIdentity, or a refusal for a TLS caller without a
// verified client certificate (a server that does not require one: only
// replicas, which present one, may call Accounts). A plaintext caller is
// "" (tests, or a mesh that checks identities itself): not checked.
func callerIdentity(ctx context.Context) (string, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) == 0 {
			return "", fault.Forbidden("a replica's client certificate is required")
		}
	}
	return PeerIdentity(ctx), nil
}

// PeerIdentity is who the caller's verified client certificate names: its
// first URI SAN (a SPIFFE ID), else its first DNS SAN, else its subject's
// common name; "" without one (plaintext, in tests). Leases are bound to
// it, so one replica's certificate cannot touch another's lease.
func PeerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := ti.State.VerifiedChains[0][0]
	switch {
	case len(leaf.URIs) > 0:
		return leaf.URIs[0].String()
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	}
	return leaf.Subject.CommonName
}
