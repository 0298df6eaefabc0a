package interceptor

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/keyaffinity"
)

// KeyHeader is keyaffinity.Header, where the key's hash travels.
const KeyHeader = keyaffinity.Header

// KeyAffinityUnary sets KeyHeader from requests that have a key.
func KeyAffinityUnary() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if k, ok := req.(interface{ GetKey() string }); ok {
			ctx = metadata.AppendToOutgoingContext(ctx, KeyHeader, keyaffinity.Value(k.GetKey()))
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
