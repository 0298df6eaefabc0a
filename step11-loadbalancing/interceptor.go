package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
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

// logStreamServer logs every stream a server handles as one "rpc" record,
// when the handler returns.
func logStreamServer(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		var addr string
		if p, ok := peer.FromContext(ss.Context()); ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		logRPC(ss.Context(), log, "server", info.FullMethod, addr, time.Since(start), err)
		return err
	}
}

// logStreamClient logs every stream a client opens as one "rpc" record, when
// the stream ends: a stream's outcome is known only after its last message.
func logStreamClient(log *slog.Logger) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		p := new(peer.Peer)
		start := time.Now()
		end := func(err error) {
			var addr string
			if p.Addr != nil {
				addr = p.Addr.String()
			}
			logRPC(ctx, log, "client", method, addr, time.Since(start), err)
		}
		cs, err := streamer(ctx, desc, cc, method, append(opts, grpc.Peer(p))...)
		if err != nil {
			end(err)
			return nil, err
		}
		return &loggedStream{ClientStream: cs, end: end}, nil
	}
}

// loggedStream calls end once, with the stream's outcome.
type loggedStream struct {
	grpc.ClientStream
	once sync.Once
	end  func(error)
}

func (s *loggedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		outcome := err
		if errors.Is(err, io.EOF) {
			outcome = nil // the server ended the stream with OK
		}
		s.once.Do(func() { s.end(outcome) })
	}
	return err
}
