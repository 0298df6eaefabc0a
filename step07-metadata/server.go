package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step07-metadata/rpc"
)

// CacheService implements rpc.CacheServer. gRPC runs handlers concurrently,
// so the map is guarded by a lock (the talk's version had none).
type CacheService struct {
	rpc.UnimplementedCacheServer

	accounts        rpc.AccountsClient
	accountsTimeout time.Duration // the longest any call waits for Accounts

	mu    sync.RWMutex
	store map[string]map[string][]byte // account token -> key -> value
}

func NewCacheService(accounts rpc.AccountsClient, accountsTimeout time.Duration) *CacheService {
	return &CacheService{accounts: accounts, accountsTimeout: accountsTimeout, store: make(map[string]map[string][]byte)}
}

func (s *CacheService) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	if req.Key == "" {
		return nil, status.Error(codes.InvalidArgument, "key must not be empty")
	}
	acct, err := s.account(ctx, req.AccountToken)
	if err != nil {
		return nil, err
	}
	val := bytes.Clone(req.Val) // the caller's slice is not ours to keep
	s.mu.Lock()
	defer s.mu.Unlock()
	// Check and write under one lock, so concurrent Stores cannot both take
	// the last slot; overwriting a key the account already has is always fine.
	keys := s.store[req.AccountToken]
	if _, exists := keys[req.Key]; !exists && int64(len(keys)) >= acct.GetMaxCacheKeys() {
		return nil, status.Errorf(codes.FailedPrecondition, "account exceeds max key limit %d", acct.GetMaxCacheKeys())
	}
	if isDryRun(ctx) {
		return &rpc.StoreResp{}, nil // every check of a real Store passed; change nothing
	}
	if keys == nil {
		keys = make(map[string][]byte)
		s.store[req.AccountToken] = keys
	}
	keys[req.Key] = val
	return &rpc.StoreResp{}, nil
}

func (s *CacheService) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	if req.Key == "" {
		return nil, status.Error(codes.InvalidArgument, "key must not be empty")
	}
	if _, err := s.account(ctx, req.AccountToken); err != nil {
		return nil, err
	}
	s.mu.RLock()
	val, ok := s.store[req.AccountToken][req.Key]
	s.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "key %q not found", req.Key)
	}
	return &rpc.GetResp{Val: bytes.Clone(val)}, nil
}

// account asks the Accounts service whom token belongs to, within the
// caller's deadline and never longer than accountsTimeout.
func (s *CacheService) account(ctx context.Context, token string) (*rpc.Account, error) {
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "missing account token")
	}
	// Derived from the caller's context, so the earlier deadline wins and a
	// caller that gives up cancels the call to Accounts too.
	ctx, cancel := context.WithTimeout(ctx, s.accountsTimeout)
	defer cancel()
	resp, err := s.accounts.GetByToken(ctx, &rpc.GetByTokenReq{Token: token})
	switch status.Code(err) {
	case codes.OK:
		return resp.GetAccount(), nil
	case codes.NotFound:
		return nil, status.Error(codes.Unauthenticated, "unknown account token")
	case codes.DeadlineExceeded:
		// Out of time, not an outage: a caller with more time may succeed.
		return nil, status.Error(codes.DeadlineExceeded, "accounts service did not answer in time")
	case codes.Canceled:
		return nil, status.Error(codes.Canceled, "call canceled")
	default:
		return nil, status.Errorf(codes.Unavailable, "accounts service: %s", status.Convert(err).Message())
	}
}

// serverConfig is what the server command's flags set. Tests build one and
// call runServer, so they start exactly what a person starts.
type serverConfig struct {
	addr         string
	certFile     string
	keyFile      string
	accountsAddr string
	caFile       string
	logger       *slog.Logger

	accountsTimeout time.Duration // the longest any call waits for Accounts
}

func parseServerFlags(args []string) (serverConfig, error) {
	cfg := serverConfig{logger: newLogger()}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "localhost:5051", "address to listen on")
	fs.StringVar(&cfg.certFile, "cert", "certs/server.crt", "TLS certificate (create one with the certs command)")
	fs.StringVar(&cfg.keyFile, "key", "certs/server.key", "TLS private key")
	fs.StringVar(&cfg.accountsAddr, "accounts", "localhost:5052", "accounts service address")
	fs.StringVar(&cfg.caFile, "ca", "certs/ca.crt", "CA certificate that signed the accounts service's certificate")
	fs.DurationVar(&cfg.accountsTimeout, "accounts-timeout", 2*time.Second, "longest wait for the accounts service, whatever the caller's deadline")
	return cfg, fs.Parse(args)
}

// serverMain is the server command: flags, a listener, runServer.
func serverMain(ctx context.Context, args []string) error {
	cfg, err := parseServerFlags(args)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return runServer(ctx, cfg, lis)
}

// runServer serves the cache on lis until ctx is done.
func runServer(ctx context.Context, cfg serverConfig, lis net.Listener) error {
	creds, err := credentials.NewServerTLSFromFile(cfg.certFile, cfg.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate (run the certs command first): %w", err)
	}
	accountsConn, err := dialAccounts(cfg)
	if err != nil {
		return fmt.Errorf("dial accounts: %w", err)
	}
	defer accountsConn.Close()

	srv := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(logUnaryServer(cfg.logger), dryRunUnaryServer))
	rpc.RegisterCacheServer(srv, NewCacheService(rpc.NewAccountsClient(accountsConn), cfg.accountsTimeout))
	log.Printf("cache server listening on %s", lis.Addr())
	return serve(ctx, srv, lis)
}

// dialAccounts connects to the Accounts service as the cache server does.
func dialAccounts(cfg serverConfig) (*grpc.ClientConn, error) {
	creds, err := credentials.NewClientTLSFromFile(cfg.caFile, "")
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	return grpc.NewClient(cfg.accountsAddr, grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(logUnaryClient(cfg.logger)))
}

// serve runs srv until ctx is done, then lets in-flight calls finish,
// giving up on them after a bounded time.
func serve(ctx context.Context, srv *grpc.Server, lis net.Listener) error {
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped: // Serve failed on its own
			return
		}
		log.Print("shutting down")
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Stop()
		}
	}()

	// ErrServerStopped: ctx ended before Serve began, and the stop came
	// first; that is a clean shutdown too.
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
