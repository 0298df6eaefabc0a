// Package interceptor holds the cross-cutting concerns that wrap every call:
// logging, panic recovery, the server-side deadline cap, dry run, the
// replica header, and on the client retries with a budget and key affinity.
package interceptor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// level logs successes at Info, caller errors at Warn and server faults at
// Error; a logger set to Warn therefore costs nothing on the happy path.
func level(code codes.Code) slog.Level {
	switch code {
	case codes.OK:
		return slog.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return slog.LevelError
	default:
		return slog.LevelWarn
	}
}

func logCall(ctx context.Context, log *slog.Logger, msg, method string, start time.Time, err error) {
	code := status.Code(err)
	lvl := level(code)
	if !log.Enabled(ctx, lvl) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.Duration("duration", time.Since(start)),
		slog.String("code", code.String()),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, lvl, msg, attrs...)
}

// LogUnaryServer logs method, duration and status of every unary call.
func LogUnaryServer(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logCall(ctx, log, "server call", info.FullMethod, start, err)
		return resp, err
	}
}

// LogStreamServer logs every stream when it ends.
func LogStreamServer(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logCall(ss.Context(), log, "server stream", info.FullMethod, start, err)
		return err
	}
}

// LogUnaryClient logs every unary call the client makes, retries included.
func LogUnaryClient(log *slog.Logger) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		logCall(ctx, log, "client call", method, start, err)
		return err
	}
}

// LogStreamClient logs the opening of every client stream; a stream's end
// is seen by whoever reads it.
func LogStreamClient(log *slog.Logger) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		start := time.Now()
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			logCall(ctx, log, "client stream", method, start, err)
			return nil, err
		}
		return &loggedStream{ClientStream: cs, log: log, method: method, start: start}, nil
	}
}

type loggedStream struct {
	grpc.ClientStream
	log    *slog.Logger
	method string
	start  time.Time
	done   bool
}

func (s *loggedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && !s.done {
		s.done = true
		logged := err
		if errors.Is(err, io.EOF) {
			logged = nil
		}
		logCall(s.Context(), s.log, "client stream", s.method, s.start, logged)
	}
	return err
}
