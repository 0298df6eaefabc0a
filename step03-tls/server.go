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

func runServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	addr := fs.String("addr", "localhost:5051", "address to listen on")
	certFile := fs.String("cert", "certs/server.crt", "TLS certificate (create one with the certs command)")
	keyFile := fs.String("key", "certs/server.key", "TLS private key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	creds, err := credentials.NewServerTLSFromFile(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate (run the certs command first): %w", err)
	}

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	rpc.RegisterCacheServer(srv, NewCacheService())
	log.Printf("cache server listening on %s", lis.Addr())
	return serve(srv, lis)
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
