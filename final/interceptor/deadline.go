package interceptor

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"grpcworkshop/final/auth"
)

// capDeadline bounds how long the server works on a call, whatever the
// client asked for (or if it set no deadline at all). The deadline then
// propagates to the calls the server makes on the caller's behalf.
func capDeadline(ctx context.Context, max time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= max {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, max)
}

// DeadlineUnary caps unary calls at max.
func DeadlineUnary(max time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, cancel := capDeadline(ctx, max)
		defer cancel()
		return handler(ctx, req)
	}
}

// DeadlineStream caps streams at max: a Dump that takes longer is cut off.
func DeadlineStream(max time.Duration) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := capDeadline(ss.Context(), max)
		defer cancel()
		return handler(srv, &auth.ContextStream{ServerStream: ss, Ctx: ctx})
	}
}
