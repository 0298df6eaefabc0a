package interceptor

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/final/apierr"
)

type notIdempotentKey struct{}

// NotIdempotent marks a call that must not be retried: repeating it could
// do its effect twice. Calls are idempotent unless marked.
func NotIdempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, notIdempotentKey{}, true)
}

func isIdempotent(ctx context.Context) bool {
	v, _ := ctx.Value(notIdempotentKey{}).(bool)
	return !v
}

// Temporary reports whether err is worth retrying: the server could not be
// reached or is draining (Unavailable), or asked us to come back later
// (ResourceExhausted with RetryInfo). A missing key, a full quota or an
// exhausted deadline will not change by retrying.
func Temporary(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		_, ok := apierr.RetryDelay(err)
		return ok
	}
	return false
}

// Budget is a retry budget in the spirit of gRPC's retry throttling: every
// temporary failure costs a token, every success earns back a fraction of
// one, and retries stop while fewer than half the tokens are left. When
// most calls fail, retries would only multiply the load on a struggling
// service, so they stop.
type Budget struct {
	mu     sync.Mutex
	tokens float64
	max    float64
	ratio  float64
}

// NewBudget returns a full budget; gRPC's defaults are 10 and 0.1.
func NewBudget(maxTokens, tokenRatio float64) *Budget {
	return &Budget{tokens: maxTokens, max: maxTokens, ratio: tokenRatio}
}

func (b *Budget) success() {
	b.mu.Lock()
	b.tokens = min(b.max, b.tokens+b.ratio)
	b.mu.Unlock()
}

func (b *Budget) failure() {
	b.mu.Lock()
	b.tokens = max(0, b.tokens-1)
	b.mu.Unlock()
}

// CanRetry reports whether the budget allows a retry now.
func (b *Budget) CanRetry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokens > b.max/2
}

// RetryOptions configure RetryUnary.
type RetryOptions struct {
	MaxAttempts int           // including the first; 0 means 4
	Backoff     time.Duration // first backoff, doubled each retry, with jitter; 0 means 50ms
	MaxBackoff  time.Duration // 0 means 1s
	Budget      *Budget       // nil means NewBudget(10, 0.1)
}

// RetryUnary retries idempotent calls that failed temporarily, with
// exponential backoff (or the server's RetryInfo delay), within the call's
// deadline and the shared retry budget.
func RetryUnary(o RetryOptions) grpc.UnaryClientInterceptor {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = 50 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Second
	}
	if o.Budget == nil {
		o.Budget = NewBudget(10, 0.1)
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		backoff := o.Backoff
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if !Temporary(err) {
				if err == nil {
					o.Budget.success()
				}
				return err
			}
			o.Budget.failure()
			if attempt >= o.MaxAttempts || !isIdempotent(ctx) || !o.Budget.CanRetry() {
				return err
			}
			wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
			if d, ok := apierr.RetryDelay(err); ok {
				wait = d
			}
			backoff = min(2*backoff, o.MaxBackoff)
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return status.Errorf(codes.DeadlineExceeded, "deadline reached before retry attempt %d, last error: %s", attempt+1, status.Convert(err).Message())
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
