// Package ratelimit refuses calls over a rate with ResourceExhausted and a
// RetryInfo detail: a global limit checked in a tap handler, before the
// server spends anything on the call, and a per-tenant limit so one
// tenant's flood cannot starve the others.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/auth"
	"grpcworkshop/final/fault"
)

func retryAfter(r rate.Limit) time.Duration {
	if r <= 0 {
		return time.Second
	}
	return max(time.Millisecond, time.Duration(float64(time.Second)/float64(r)))
}

// Tap returns a grpc.InTapHandle that refuses calls over the global rate.
// r == rate.Inf disables it.
func Tap(r rate.Limit, burst int) tap.ServerInHandle {
	lim := rate.NewLimiter(r, burst)
	after := retryAfter(r)
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if !lim.Allow() {
			// A tap runs before any interceptor: it maps its own error.
			return nil, apierr.ToStatus(fault.OverRate("service", after))
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
}

// NewPerTenant allows each tenant r calls a second with bursts of burst.
func NewPerTenant(r rate.Limit, burst int) *PerTenant {
	return &PerTenant{r: r, burst: burst}
}

func (p *PerTenant) allow(ctx context.Context) error {
	if p.r == rate.Inf {
		return nil
	}
	acct, ok := auth.AccountFrom(ctx)
	if !ok {
		return nil // public methods carry no tenant
	}
	l, ok := p.lims.Load(acct.Tenant)
	if !ok {
		l, _ = p.lims.LoadOrStore(acct.Tenant, rate.NewLimiter(p.r, p.burst))
	}
	if !l.(*rate.Limiter).Allow() {
		return fault.OverRate("tenant "+acct.Tenant, retryAfter(p.r))
	}
	return nil
}

// Unary applies the per-tenant limit to unary calls.
func (p *PerTenant) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := p.allow(ctx); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream applies the per-tenant limit to streams.
func (p *PerTenant) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := p.allow(ss.Context()); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
