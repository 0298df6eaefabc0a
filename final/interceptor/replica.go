package interceptor

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// ReplicaHeader names the replica that served a call, in the response
// header, when the request carries the same header (any value): useful to
// see load balancing and key affinity at work. Only calls that ask pay for
// the extra header (a few percent of a small call's cost), and replica
// names are not shown to every client.
const ReplicaHeader = "x-replica"

// AskReplica asks the server of an outgoing call to name itself.
func AskReplica(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ReplicaHeader, "?")
}

func askedForReplica(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, ReplicaHeader)) > 0
}

// ReplicaUnary sets the replica header on unary responses that ask for it.
func ReplicaUnary(id string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(ReplicaHeader, id)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if askedForReplica(ctx) {
			_ = grpc.SetHeader(ctx, md) // fails only if headers were already sent
		}
		return handler(ctx, req)
	}
}

// ReplicaStream sets the replica header on streams that ask for it.
func ReplicaStream(id string) grpc.StreamServerInterceptor {
	md := metadata.Pairs(ReplicaHeader, id)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if askedForReplica(ss.Context()) {
			_ = ss.SetHeader(md)
		}
		return handler(srv, ss)
	}
}
