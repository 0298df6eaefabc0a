package interceptor

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"grpcworkshop.example/final/calllog"
)

// LogUnaryServer logs method, duration and status of every unary call.
func LogUnaryServer(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		calllog.Log(ctx, log, "server call", info.FullMethod, start, err)
		return resp, err
	}
}

// LogStreamServer logs every stream when it ends.
func LogStreamServer(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		calllog.Log(ss.Context(), log, "server stream", info.FullMethod, start, err)
		return err
	}
}
