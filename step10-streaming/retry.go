package main

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/step10-streaming/rpc"
)

// The binaries' retry policy: a few attempts, the first retry soon.
const (
	defaultAttempts = 3
	retryBase       = 50 * time.Millisecond
	retryMax        = time.Second
)

type notIdempotentKey struct{}

// NotIdempotent marks the calls made with ctx as unsafe to repeat: they are
// attempted once. gRPC has no such marker, and a call is idempotent unless
// marked.
func NotIdempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, notIdempotentKey{}, true)
}

func isIdempotent(ctx context.Context) bool {
	marked, _ := ctx.Value(notIdempotentKey{}).(bool)
	return !marked
}

// retryUnary attempts an idempotent call that failed temporarily again, up
// to maxAttempts attempts in all, after a backoff. It never waits past the
// caller's deadline: when the next wait would end after it, it gives up at
// once.
func retryUnary(maxAttempts int, base, max time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !isIdempotent(ctx) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil || !temporary(err) || attempt >= maxAttempts {
				return err
			}
			wait := backoff(attempt, base, max)
			if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
				return status.Errorf(codes.DeadlineExceeded, "timeout reached before next retry attempt: %s", status.Convert(err).Message())
			}
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
}

// backoff is the wait before retry n (1 for the first): a random time below
// base·2^(n-1), capped at max. The randomness ("full jitter") keeps clients
// that failed together from retrying together.
func backoff(n int, base, max time.Duration) time.Duration {
	ceiling := base
	for i := 1; i < n && ceiling < max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, max)
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// temporary reports whether the same call may succeed if tried again, as the
// server said in the status's Error detail. A missing key or a full quota
// stays the same however often it is asked for. Without a detail, only
// Unavailable is temporary: that is how gRPC itself reports a connection that
// failed or was refused, before any server could decide anything.
func temporary(err error) bool {
	if e, ok := rpc.FromError(err); ok {
		return e.GetTemporary()
	}
	return status.Code(err) == codes.Unavailable
}
