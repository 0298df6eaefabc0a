package telemetry

import (
	"context"

	"google.golang.org/grpc"
)

// NoteUnary puts an empty call note in the context; it goes first, outside
// the logging interceptor, so that the log line sees what later steps note.
func NoteUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(WithCallNote(ctx), req)
	}
}

// NoteStream is NoteUnary for streams.
func NoteStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &stream{ServerStream: ss, ctx: WithCallNote(ss.Context())})
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// TenantInterceptors go right after authentication: they note the call's
// tenant for its log line and span (tenant reads it from the context; ok
// is false for calls that need no token, such as health).
func TenantInterceptors(tenant func(context.Context) (string, bool)) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	note := func(ctx context.Context) {
		if t, ok := tenant(ctx); ok {
			NoteTenant(ctx, t)
		}
	}
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		note(ctx)
		return handler(ctx, req)
	}
	streamI := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		note(ss.Context())
		return handler(srv, ss)
	}
	return unary, streamI
}
