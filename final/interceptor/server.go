// Package interceptor holds the server's cross-cutting concerns that wrap
// every call: logging, panic recovery, the deadline cap, dry run and the
// replica header. The client's interceptors live in package client.
package interceptor

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/fault"
)

// panicked is an Internal error whose cause (the panic and its stack) the
// error-mapping interceptor logs; the client sees only "internal error".
func panicked(r any) error {
	return &fault.Error{Reason: fault.Internal, Err: fmt.Errorf("panic: %v\n%s", r, debug.Stack())}
}

// RecoverUnary turns a panic in a handler into Internal for that call, so
// one bad request cannot take the whole server down.
func RecoverUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				resp, err = nil, panicked(r)
			}
		}()
		return handler(ctx, req)
	}
}

// RecoverStream is RecoverUnary for streams.
func RecoverStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicked(r)
			}
		}()
		return handler(srv, ss)
	}
}

func askedForReplica(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, client.ReplicaHeader)) > 0
}

// ReplicaUnary sets the replica header on unary responses that ask for it.
func ReplicaUnary(id string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(client.ReplicaHeader, id)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if askedForReplica(ctx) {
			_ = grpc.SetHeader(ctx, md) // fails only if headers were already sent
		}
		return handler(ctx, req)
	}
}

// ReplicaStream sets the replica header on streams that ask for it.
func ReplicaStream(id string) grpc.StreamServerInterceptor {
	md := metadata.Pairs(client.ReplicaHeader, id)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if askedForReplica(ss.Context()) {
			_ = ss.SetHeader(md)
		}
		return handler(srv, ss)
	}
}

// DeadlineUnary caps unary calls at max. Health and reflection are
// exempt, like every interceptor about the application (auth.Public).
func DeadlineUnary(max time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if auth.Public(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, cancel := capDeadline(ctx, max)
		defer cancel()
		return handler(ctx, req)
	}
}

// DeadlineStream caps streams at max: a Dump that takes longer is cut off.
// A health Watch is meant to stay open (a load balancer holds one per
// replica), and a reflection stream serves a tool's session: neither is
// capped.
func DeadlineStream(max time.Duration) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if auth.Public(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, cancel := capDeadline(ss.Context(), max)
		defer cancel()
		return handler(srv, &auth.ContextStream{ServerStream: ss, Ctx: ctx})
	}
}

// DryRun reads the dry-run metadata: absent or "0" is false, "1" is true,
// anything else is InvalidArgument (metadata is untyped, so it is checked).
func DryRun(ctx context.Context) (bool, error) {
	vals := metadata.ValueFromIncomingContext(ctx, client.DryRunHeader)
	if len(vals) == 0 {
		return false, nil
	}
	if len(vals) == 1 {
		switch vals[0] {
		case "1":
			return true, nil
		case "0":
			return false, nil
		}
	}
	return false, fault.BadField(client.DryRunHeader, `metadata %q must be "1" or "0", got %q`, client.DryRunHeader, vals)
}

type dryRunKey struct{}

// IsDryRun reports whether the DryRunUnary interceptor marked ctx a dry run.
func IsDryRun(ctx context.Context) bool {
	v, _ := ctx.Value(dryRunKey{}).(bool)
	return v
}

func withDryRun(ctx context.Context) (context.Context, error) {
	dry, err := DryRun(ctx)
	if err != nil || !dry {
		return ctx, err
	}
	return context.WithValue(ctx, dryRunKey{}, true), nil
}

// DryRunUnary reads the dry-run metadata once per call, in one place,
// refusing bad values before the handler runs. Health and reflection
// ignore it: a tool sends its headers with every call, including the
// reflection lookups before the one they were meant for.
func DryRunUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if auth.Public(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, err := withDryRun(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// DryRunStream does the same for streams: a bad value is refused on every
// method, even one (like Dump) that changes nothing.
func DryRunStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if auth.Public(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, err := withDryRun(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &auth.ContextStream{ServerStream: ss, Ctx: ctx})
	}
}
