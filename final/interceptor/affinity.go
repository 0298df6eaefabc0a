package interceptor

import (
	"context"
	"hash/fnv"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// KeyHeader carries a hash of the request's key; the ring_hash balancer
// hashes it to pick a replica, so a key always goes to the same replica
// while the set of replicas is stable.
const KeyHeader = "x-cache-key"

// keyHash turns any key (arbitrary UTF-8) into a valid header value.
func keyHash(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return strconv.FormatUint(h.Sum64(), 16)
}

// KeyAffinityUnary sets KeyHeader from requests that have a key.
func KeyAffinityUnary() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if k, ok := req.(interface{ GetKey() string }); ok {
			ctx = metadata.AppendToOutgoingContext(ctx, KeyHeader, keyHash(k.GetKey()))
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
