package ratelimit

import (
	"context"
	"strings"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/fault"
)

// Admitter judges a call's metadata before the server reads its message:
// an error refuses the call (a missing or malformed token, or one Accounts
// refused moments ago); known says whether the caller is a tenant the
// replica already knows. auth.Authenticator.Admit is one.
type Admitter func(md metadata.MD) (known bool, err error)

// Budgets are the two rate limits of the admission tap, in calls per
// second (rate.Inf: no limit): Paying for calls of tenants the replica
// knows, Unauthenticated for everything else (no token, a token not yet
// looked up, reflection). Health checks draw on neither.
type Budgets struct {
	Paying, Unauthenticated           rate.Limit
	PayingBurst, UnauthenticatedBurst int
}

// Health reports health-check methods, which are never rate limited: an
// overloaded replica must still answer its readiness probe truthfully.
func Health(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}

// AdmissionTap returns a grpc.InTapHandle that runs before anything else
// is spent on a call: it refuses what admit refuses, then charges known
// tenants' calls to the paying budget and all others to the
// unauthenticated one, so traffic without a valid token cannot use up
// what paying tenants need.
func AdmissionTap(b Budgets, public func(fullMethod string) bool, admit Admitter) tap.ServerInHandle {
	paying := rate.NewLimiter(b.Paying, b.PayingBurst)
	unauth := rate.NewLimiter(b.Unauthenticated, b.UnauthenticatedBurst)
	payingAfter, unauthAfter := retryAfter(b.Paying), retryAfter(b.Unauthenticated)
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if Health(info.FullMethodName) {
			return ctx, nil
		}
		known := false
		if !public(info.FullMethodName) {
			var err error
			if known, err = admit(info.Header); err != nil {
				// A tap runs before any interceptor: it maps its own error.
				return nil, apierr.ToStatus(err)
			}
		}
		if known {
			if !paying.Allow() {
				return nil, apierr.ToStatus(fault.OverRate("service", payingAfter))
			}
			return ctx, nil
		}
		if !unauth.Allow() {
			return nil, apierr.ToStatus(fault.OverRate("unauthenticated callers", unauthAfter))
		}
		return ctx, nil
	}
}
