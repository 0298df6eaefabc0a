package interceptor

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// ReplicaHeader names the replica that served a call, in the response
// header: useful to see load balancing and key affinity at work.
const ReplicaHeader = "x-replica"

// ReplicaUnary sets the replica header on every unary response.
func ReplicaUnary(id string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(ReplicaHeader, id)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, md) // fails only if headers were already sent
		return handler(ctx, req)
	}
}

// ReplicaStream sets the replica header on every stream.
func ReplicaStream(id string) grpc.StreamServerInterceptor {
	md := metadata.Pairs(ReplicaHeader, id)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		_ = ss.SetHeader(md)
		return handler(srv, ss)
	}
}
