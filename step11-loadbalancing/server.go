package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// CacheService implements rpc.CacheServer. gRPC runs handlers concurrently,
// so the map is guarded by a lock (the talk's version had none).
type CacheService struct {
	rpc.UnimplementedCacheServer

	accounts        rpc.AccountsClient
	accountsTimeout time.Duration // the longest any call waits for Accounts

	mu    sync.RWMutex
	store map[string]map[string][]byte // account token -> key -> value
	order map[string][]string          // account token -> its keys in the order they were first stored
}

func NewCacheService(accounts rpc.AccountsClient, accountsTimeout time.Duration) *CacheService {
	return &CacheService{accounts: accounts, accountsTimeout: accountsTimeout, store: make(map[string]map[string][]byte), order: make(map[string][]string)}
}

func (s *CacheService) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	if req.Key == "" {
		return nil, errEmptyKey
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
	_, exists := keys[req.Key]
	if !exists && int64(len(keys)) >= acct.GetMaxCacheKeys() {
		return nil, fmt.Errorf("%w %d", errOverQuota, acct.GetMaxCacheKeys())
	}
	if isDryRun(ctx) {
		return &rpc.StoreResp{}, nil // every check of a real Store passed; change nothing
	}
	if keys == nil {
		keys = make(map[string][]byte)
		s.store[req.AccountToken] = keys
	}
	if !exists {
		s.order[req.AccountToken] = append(s.order[req.AccountToken], req.Key)
	}
	keys[req.Key] = val
	return &rpc.StoreResp{}, nil
}

func (s *CacheService) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	if req.Key == "" {
		return nil, errEmptyKey
	}
	if _, err := s.account(ctx, req.AccountToken); err != nil {
		return nil, err
	}
	s.mu.RLock()
	val, ok := s.store[req.AccountToken][req.Key]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("key %q %w", req.Key, errNotFound)
	}
	return &rpc.GetResp{Val: bytes.Clone(val)}, nil
}

// account asks the Accounts service whom token belongs to, within the
// caller's deadline and never longer than accountsTimeout.
func (s *CacheService) account(ctx context.Context, token string) (*rpc.Account, error) {
	if token == "" {
		return nil, errMissingToken
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
		return nil, errUnknownToken
	case codes.DeadlineExceeded:
		// Out of time, not an outage: a caller with more time may succeed.
		return nil, errAccountsTimeout
	case codes.Canceled:
		return nil, errCanceled
	default:
		return nil, fmt.Errorf("%w: %s", errAccountsDown, status.Convert(err).Message())
	}
}

func runServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	addr := fs.String("addr", "localhost:5051", "address to listen on")
	certFile := fs.String("cert", "certs/server.crt", "TLS certificate (create one with the certs command)")
	keyFile := fs.String("key", "certs/server.key", "TLS private key")
	accountsAddr := fs.String("accounts", "localhost:5052", "accounts service address")
	caFile := fs.String("ca", "certs/ca.crt", "CA certificate that signed the accounts service's certificate")
	accountsTimeout := fs.Duration("accounts-timeout", 2*time.Second, "longest wait for the accounts service, whatever the caller's deadline")
	var lim limits
	fs.Float64Var(&lim.rate, "rate", 150, "calls per second the server accepts from all callers together; 0 for no limit")
	fs.IntVar(&lim.burst, "burst", 50, "calls above -rate accepted at once")
	maxStreams := fs.Uint("max-streams", 64, "calls in flight on one connection; 0 for no limit")
	fs.IntVar(&lim.maxConns, "max-conns", 1024, "client connections at once; 0 for no limit")
	replica := fs.String("replica", "", "name of this replica in the x-replica response header (default: the address it listens on)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lim.maxStreams = uint32(*maxStreams)
	creds, err := credentials.NewServerTLSFromFile(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate (run the certs command first): %w", err)
	}
	accountsCreds, err := credentials.NewClientTLSFromFile(*caFile, "")
	if err != nil {
		return fmt.Errorf("load CA certificate: %w", err)
	}
	logger := newLogger()
	accountsConn, err := grpc.NewClient(*accountsAddr, grpc.WithTransportCredentials(accountsCreds),
		grpc.WithChainUnaryInterceptor(logUnaryClient(logger), retryUnary(defaultAttempts, retryBase, retryMax)))
	if err != nil {
		return fmt.Errorf("dial accounts: %w", err)
	}
	defer accountsConn.Close()

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if *replica == "" {
		*replica = lis.Addr().String()
	}
	srv := grpc.NewServer(append(lim.serverOptions(), grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(logUnaryServer(logger), replicaUnaryServer(*replica), errorsUnaryServer, dryRunUnaryServer),
		grpc.ChainStreamInterceptor(logStreamServer(logger), replicaStreamServer(*replica), errorsStreamServer, dryRunStreamServer))...)
	rpc.RegisterCacheServer(srv, NewCacheService(rpc.NewAccountsClient(accountsConn), *accountsTimeout))
	log.Printf("cache server %s listening on %s", *replica, lis.Addr())
	return serve(srv, lim.listener(lis))
}

// serve runs srv until SIGINT or SIGTERM, then lets in-flight calls finish,
// giving up on them after a bounded time.
func serve(srv *grpc.Server, lis net.Listener) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	go func() {
		<-ctx.Done()
		log.Print("shutting down")
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Stop()
		}
	}()

	if err := srv.Serve(lis); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
