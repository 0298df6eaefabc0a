// Package ratelimit refuses calls over a rate with ResourceExhausted and a
// RetryInfo detail: the admission tap, before the server spends anything on
// a call, with one budget for known tenants and another for everyone else
// (health checks are never limited), and a per-tenant limit so one
// tenant's flood cannot starve the others.
package ratelimit

import (
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/fault"
)

func retryAfter(r rate.Limit) time.Duration {
	if r <= 0 {
		return time.Second
	}
	return max(time.Millisecond, time.Duration(float64(time.Second)/float64(r)))
}

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

// PerTenant limits each tenant separately. It runs after authentication,
// so it keys on tenants the Accounts service knows, and the map of
// limiters cannot be grown by made-up tokens.
type PerTenant struct {
	r     rate.Limit
	burst int
	lims  sync.Map // tenant -> *rate.Limiter
	cost  func(req any) int
}

// NewPerTenant allows each tenant r calls a second with bursts of burst.
func NewPerTenant(r rate.Limit, burst int) *PerTenant {
	return &PerTenant{r: r, burst: burst}
}

// Cost makes a unary call cost cost(req) of the tenant's rate instead of
// one (a batch costs one per key); a cost above the burst takes the whole
// burst, so that a batch within the server's limits can always pass.
func (p *PerTenant) Cost(cost func(req any) int) *PerTenant {
	p.cost = cost
	return p
}

func (p *PerTenant) allow(ctx context.Context, n int) error {
	if p.r == rate.Inf {
		return nil
	}
	n = max(1, min(n, p.burst))
	acct, ok := auth.AccountFrom(ctx)
	if !ok {
		return nil // public methods carry no tenant
	}
	l, ok := p.lims.Load(acct.Tenant)
	if !ok {
		l, _ = p.lims.LoadOrStore(acct.Tenant, rate.NewLimiter(p.r, p.burst))
	}
	if !l.(*rate.Limiter).AllowN(time.Now(), n) {
		return fault.OverRate("tenant "+acct.Tenant, time.Duration(n)*retryAfter(p.r))
	}
	return nil
}

// Unary applies the per-tenant limit to unary calls.
func (p *PerTenant) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		n := 1
		if p.cost != nil {
			n = p.cost(req)
		}
		if err := p.allow(ctx, n); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream applies the per-tenant limit to streams.
func (p *PerTenant) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := p.allow(ss.Context(), 1); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
