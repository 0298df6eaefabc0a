package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/ringhash" // registers ring_hash_experimental
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

const (
	// replicaHeader names the replica that served a call, in the response
	// header, so that anyone can see where calls go.
	replicaHeader = "x-replica"
	// keyHeader carries a hash of the request's key. ring_hash hashes its
	// value to choose the replica, so a key always goes to the same one.
	keyHeader = "x-cache-key"
)

// serviceConfig selects the load-balancing policy for the replicas.
func serviceConfig(policy string) (string, error) {
	switch policy {
	case "round_robin":
		return `{"loadBalancingConfig": [{"round_robin": {}}]}`, nil
	case "ring_hash":
		return fmt.Sprintf(`{"loadBalancingConfig": [{"ring_hash_experimental": {"requestHashHeader": %q}}]}`, keyHeader), nil
	default:
		return "", fmt.Errorf("unknown load-balancing policy %q (want round_robin or ring_hash)", policy)
	}
}

// dialReplicas returns one client connection to every replica in addrs, or
// to every address of one dns: name, spreading calls over them by policy.
// A list is handed to gRPC by a resolver, as DNS with several addresses
// would be, and gRPC connects to each and balances calls itself: no proxy,
// no hand-made picker.
func dialReplicas(addrs []string, policy string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cfg, err := serviceConfig(policy)
	if err != nil {
		return nil, err
	}
	// A dns: name is resolved by gRPC itself: every address it has is a
	// replica, and a change in DNS is a change of replicas.
	if len(addrs) == 1 && strings.HasPrefix(addrs[0], "dns:") {
		return grpc.NewClient(addrs[0], append(opts, grpc.WithDefaultServiceConfig(cfg))...)
	}
	var endpoints []resolver.Endpoint
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("replica address %q: %w", addr, err)
		}
		// Each replica's certificate is checked against its own host name,
		// not the made-up name of the target.
		endpoints = append(endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr, ServerName: host}}})
	}
	r := manual.NewBuilderWithScheme("replicas")
	r.InitialState(resolver.State{Endpoints: endpoints})
	return grpc.NewClient(r.Scheme()+":///cache", append(opts, grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(cfg))...)
}

// keyAffinityUnary sets keyHeader on calls whose request has a key. A hash,
// not the key itself: keys are any string, header values printable ASCII.
func keyAffinityUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if r, ok := req.(interface{ GetKey() string }); ok {
		h := fnv.New64a()
		h.Write([]byte(r.GetKey()))
		ctx = metadata.AppendToOutgoingContext(ctx, keyHeader, strconv.FormatUint(h.Sum64(), 16))
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// replicaUnaryServer names the replica in every unary response's header.
func replicaUnaryServer(name string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(replicaHeader, name)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := grpc.SetHeader(ctx, md); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// replicaStreamServer names the replica in every stream's header.
func replicaStreamServer(name string) grpc.StreamServerInterceptor {
	md := metadata.Pairs(replicaHeader, name)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := ss.SetHeader(md); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// replicaOf returns the replica named in a response header, if any.
func replicaOf(header metadata.MD) string {
	return strings.Join(header.Get(replicaHeader), ",")
}
