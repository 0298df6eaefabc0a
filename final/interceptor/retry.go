package interceptor

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
)

// RetryOnRetryInfo retries what gRPC's own retry policy cannot: a call
// refused with ResourceExhausted and a RetryInfo detail (a rate limit) is
// tried again after the server's delay, if safe(method) says the method may
// be repeated, at most maxAttempts times in all, and never past the call's
// deadline. Unavailable is retried by the service config's retryPolicy,
// under the channel's retryThrottling; ResourceExhausted without RetryInfo
// (a message too large) is not retried.
func RetryOnRetryInfo(safe func(method string) bool, maxAttempts int) grpc.UnaryClientInterceptor {
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
