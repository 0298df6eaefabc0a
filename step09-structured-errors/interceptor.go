package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// newLogger writes structured records to stderr, keeping stdout for the
// client's answers.
func newLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// logUnaryServer logs every call a server handles as one "rpc" record, so
// nobody has to time handlers by hand.
func logUnaryServer(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		var addr string
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		logRPC(ctx, log, "server", info.FullMethod, addr, time.Since(start), err)
		return resp, err
	}
}

// logUnaryClient logs every call a client makes as one "rpc" record,
// including the ones that never reached a server.
func logUnaryClient(log *slog.Logger) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var p peer.Peer
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
		var addr string
		if p.Addr != nil { // nil when no connection was made
			addr = p.Addr.String()
		}
		logRPC(ctx, log, "client", method, addr, time.Since(start), err)
		return err
	}
}

func logRPC(ctx context.Context, log *slog.Logger, side, method, addr string, d time.Duration, err error) {
	attrs := []slog.Attr{
		slog.String("side", side),
		slog.String("method", method),
		slog.String("code", status.Code(err).String()),
		slog.Duration("duration", d),
		slog.String("peer", addr),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "rpc", attrs...)
}
