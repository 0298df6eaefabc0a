package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/calllog"
	"grpcworkshop.example/final/keyaffinity"
)

// The client's side of every call: its token, the headers it may send,
// and the interceptors Dial chains (key affinity, retries on RetryInfo,
// logging). Nothing here knows the server.

const (
	tokenHeader = "authorization"
	tokenScheme = "Bearer "
)

// TokenCredentials is a credentials.PerRPCCredentials that sends a bearer
// token with every call, and only over TLS unless AllowInsecure (for
// plaintext benchmarks on loopback).
type TokenCredentials struct {
	Token         string
	AllowInsecure bool
}

func (c TokenCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{tokenHeader: tokenScheme + c.Token}, nil
}

func (c TokenCredentials) RequireTransportSecurity() bool { return !c.AllowInsecure }

// DryRunHeader is the metadata that asks the server to do everything but
// change state. Metadata rather than a field: it applies to every method.
const DryRunHeader = "dry-run"

// WithDryRun marks an outgoing call as a dry run.
func WithDryRun(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, DryRunHeader, "1")
}

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

// RetryOnRetryInfo retries what gRPC's own retry policy cannot: a call
// refused with ResourceExhausted and a RetryInfo detail (a rate limit) is
// tried again after the server's delay, if safe(method) says the method may
// be repeated, at most maxAttempts times in all, and never past the call's
// deadline. maxAttempts counts as RetryPolicy.MaxAttempts does: 0 is
// DefaultMaxAttempts, 1 no retry; a negative count panics (a program
// error; Dial refuses one with an error). Unavailable is retried by the
// service config's retryPolicy, under the channel's retryThrottling;
// ResourceExhausted without RetryInfo (a message too large) is not retried.
func RetryOnRetryInfo(safe func(method string) bool, maxAttempts int) grpc.UnaryClientInterceptor {
	if maxAttempts < 0 {
		panic(fmt.Sprintf("client.RetryOnRetryInfo: negative maxAttempts %d (1 is no retry, 0 the default)", maxAttempts))
	}
	maxAttempts = RetryPolicy{MaxAttempts: maxAttempts}.withDefaults().MaxAttempts
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if status.Code(err) != codes.ResourceExhausted || attempt >= maxAttempts || !safe(method) {
				return err
			}
			wait, ok := apierr.RetryDelay(err)
			if !ok {
				return err
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				// The server's own answer, not a DeadlineExceeded of ours:
				// the deadline has not passed, and the caller decides by
				// its reason and RetryInfo.
				return err
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			case <-t.C:
			}
		}
	}
}

// LogUnaryClient logs every unary call the client makes, retries included.
func LogUnaryClient(log *slog.Logger) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		calllog.Log(ctx, log, "client call", method, start, err)
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
			calllog.Log(ctx, log, "client stream", method, start, err)
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
		calllog.Log(s.Context(), s.log, "client stream", s.method, s.start, logged)
	}
	return err
}
