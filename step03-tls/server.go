package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step03-tls/rpc"
)

// CacheService implements rpc.CacheServer. gRPC runs handlers concurrently,
// so the map is guarded by a lock (the talk's version had none).
type CacheService struct {
	rpc.UnimplementedCacheServer

	mu    sync.RWMutex
	store map[string][]byte
}

func NewCacheService() *CacheService {
	return &CacheService{store: make(map[string][]byte)}
}

func (s *CacheService) Store(ctx context.Context, req *rpc.StoreReq) (*rpc.StoreResp, error) {
	if req.Key == "" {
		return nil, status.Error(codes.InvalidArgument, "key must not be empty")
	}
	val := bytes.Clone(req.Val) // the caller's slice is not ours to keep
	s.mu.Lock()
	s.store[req.Key] = val
	s.mu.Unlock()
	return &rpc.StoreResp{}, nil
}

func (s *CacheService) Get(ctx context.Context, req *rpc.GetReq) (*rpc.GetResp, error) {
	if req.Key == "" {
		return nil, status.Error(codes.InvalidArgument, "key must not be empty")
	}
	s.mu.RLock()
	val, ok := s.store[req.Key]
	s.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "key %q not found", req.Key)
	}
	return &rpc.GetResp{Val: bytes.Clone(val)}, nil
}

// serverConfig is what the server command's flags set. Tests build one and
// call runServer, so they start exactly what a person starts.
type serverConfig struct {
	addr     string
	certFile string
	keyFile  string
}

func parseServerFlags(args []string) (serverConfig, error) {
	var cfg serverConfig
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "localhost:5051", "address to listen on")
	fs.StringVar(&cfg.certFile, "cert", "certs/server.crt", "TLS certificate (create one with the certs command)")
	fs.StringVar(&cfg.keyFile, "key", "certs/server.key", "TLS private key")
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
	srv := grpc.NewServer(grpc.Creds(creds))
	rpc.RegisterCacheServer(srv, NewCacheService())
	log.Printf("cache server listening on %s", lis.Addr())
	return serve(ctx, srv, lis)
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
