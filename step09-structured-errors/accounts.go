package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step09-structured-errors/rpc"
)

//go:embed accounts.json
var defaultAccounts []byte

// AccountsService implements rpc.AccountsServer from a fixed set of accounts.
type AccountsService struct {
	rpc.UnimplementedAccountsServer

	byToken map[string]*rpc.Account // read-only after construction
	latency time.Duration           // added to every answer, to watch deadlines fire
}

func NewAccountsService(byToken map[string]*rpc.Account, latency time.Duration) *AccountsService {
	return &AccountsService{byToken: byToken, latency: latency}
}

func (s *AccountsService) GetByToken(ctx context.Context, req *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	if req.Token == "" {
		return nil, status.Error(codes.InvalidArgument, "token must not be empty")
	}
	// A slow service still stops working for a caller that has given up.
	select {
	case <-time.After(s.latency):
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	acct, ok := s.byToken[req.Token]
	if !ok {
		return nil, status.Error(codes.NotFound, "no account has this token")
	}
	return &rpc.GetByTokenResp{Account: acct}, nil
}

// parseAccounts reads {"TOKEN": {"max_cache_keys": N}, ...}.
func parseAccounts(data []byte) (map[string]*rpc.Account, error) {
	var raw map[string]struct {
		MaxCacheKeys *int64 `json:"max_cache_keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse accounts: %w", err)
	}
	accounts := make(map[string]*rpc.Account, len(raw))
	for token, a := range raw {
		switch {
		case token == "":
			return nil, fmt.Errorf("parse accounts: empty token")
		case a.MaxCacheKeys == nil || *a.MaxCacheKeys < 0:
			return nil, fmt.Errorf("parse accounts: token %q needs max_cache_keys >= 0", token)
		}
		accounts[token] = &rpc.Account{MaxCacheKeys: *a.MaxCacheKeys}
	}
	return accounts, nil
}

// accountsConfig is what the accounts command's flags set.
type accountsConfig struct {
	addr     string
	file     string
	certFile string
	keyFile  string
	logger   *slog.Logger

	latency time.Duration // added to every answer
}

func parseAccountsFlags(args []string) (accountsConfig, error) {
	cfg := accountsConfig{logger: newLogger()}
	fs := flag.NewFlagSet("accounts", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "localhost:5052", "address to listen on")
	fs.StringVar(&cfg.file, "accounts", "", "JSON file of accounts (default: the embedded accounts.json)")
	fs.StringVar(&cfg.certFile, "cert", "certs/server.crt", "TLS certificate (create one with the certs command)")
	fs.StringVar(&cfg.keyFile, "key", "certs/server.key", "TLS private key")
	fs.DurationVar(&cfg.latency, "latency", 0, "time to wait before every answer, to watch deadlines fire")
	return cfg, fs.Parse(args)
}

// accountsMain is the accounts command: flags, a listener, runAccounts.
func accountsMain(ctx context.Context, args []string) error {
	cfg, err := parseAccountsFlags(args)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return runAccounts(ctx, cfg, lis)
}

// runAccounts serves the Accounts service on lis until ctx is done.
func runAccounts(ctx context.Context, cfg accountsConfig, lis net.Listener) error {
	data := defaultAccounts
	if cfg.file != "" {
		var err error
		if data, err = os.ReadFile(cfg.file); err != nil {
			return fmt.Errorf("read accounts: %w", err)
		}
	}
	accounts, err := parseAccounts(data)
	if err != nil {
		return err
	}
	creds, err := credentials.NewServerTLSFromFile(cfg.certFile, cfg.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate (run the certs command first): %w", err)
	}

	srv := grpc.NewServer(grpc.Creds(creds), grpc.ChainUnaryInterceptor(logUnaryServer(cfg.logger)))
	rpc.RegisterAccountsServer(srv, NewAccountsService(accounts, cfg.latency))
	log.Printf("accounts server listening on %s with %d accounts", lis.Addr(), len(accounts))
	return serve(ctx, srv, lis)
}
