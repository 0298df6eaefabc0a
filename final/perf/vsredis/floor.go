package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/tlsutil"
)

// floor is the Cache service with nothing behind it: every Get answers the
// same value, every Store succeeds, and batches answer as final's do (one
// result per key, the key echoed, a value for GetMany), so the bytes on
// the wire are final's. It runs in its own process, on grpc-go with
// final's transport settings (TLS, keepalive policy, stream workers,
// streams per connection) and no interceptor: what any gRPC service over
// TLS costs before it does any work. Its row against Redis is the most
// final could reach by cutting its own code.
type floor struct {
	rpc.UnimplementedCacheServer
	val []byte
}

func (f *floor) Get(context.Context, *rpc.GetReq) (*rpc.GetResp, error) {
	return &rpc.GetResp{Val: f.val, Revision: 1}, nil
}

func (f *floor) Store(context.Context, *rpc.StoreReq) (*rpc.StoreResp, error) {
	return &rpc.StoreResp{Revision: 1}, nil
}

func (f *floor) GetMany(_ context.Context, req *rpc.GetManyRequest) (*rpc.GetManyResponse, error) {
	out := make([]*rpc.GetManyResult, len(req.GetKeys()))
	for i, k := range req.GetKeys() {
		out[i] = &rpc.GetManyResult{Key: k, Val: f.val}
	}
	return &rpc.GetManyResponse{Results: out}, nil
}

func (f *floor) StoreMany(_ context.Context, req *rpc.StoreManyRequest) (*rpc.StoreManyResponse, error) {
	out := make([]*rpc.StoreManyResult, len(req.GetItems()))
	for i, it := range req.GetItems() {
		out[i] = &rpc.StoreManyResult{Key: it.GetKey()}
	}
	return &rpc.StoreManyResponse{Results: out}, nil
}

// serveFloor serves the floor on addr until SIGINT or SIGTERM.
func serveFloor(addr, cert, key string, valueSize int) error {
	tlsCfg, err := tlsutil.ServerConfig(cert, key, "")
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// final's server options (server.Common.options), less its admission
	// control: the client pings idle connections, so the policy must let it.
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.NumStreamWorkers(64),
		grpc.MaxConcurrentStreams(64),
	)
	rpc.RegisterCacheServer(gs, &floor{val: make([]byte, valueSize)})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		gs.Stop()
	}()
	fmt.Fprintf(os.Stderr, "vsredis: bare gRPC Cache service on %s\n", lis.Addr())
	return gs.Serve(lis)
}
