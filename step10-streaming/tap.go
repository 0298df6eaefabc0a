package main

import (
	"context"
	"net"

	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"
)

// limits is how much work the cache server takes on at once. Past them a
// caller waits (connections, streams) or is refused (rate), instead of the
// server running out of memory.
type limits struct {
	rate       float64 // calls per second over all callers; 0: no limit
	burst      int     // calls above rate allowed at once
	maxStreams uint    // calls in flight on one connection
	maxConns   int     // connections at once; 0: no limit
}

// serverOptions are the gRPC options that enforce l.
func (l limits) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.MaxConcurrentStreams(uint32(l.maxStreams))}
	if l.rate > 0 {
		opts = append(opts, grpc.InTapHandle(rateLimitTap(rate.NewLimiter(rate.Limit(l.rate), l.burst))))
	}
	return opts
}

// listener caps the connections lis accepts: past maxConns, Accept waits
// for one to close.
func (l limits) listener(lis net.Listener) net.Listener {
	if l.maxConns <= 0 {
		return lis
	}
	return netutil.LimitListener(lis, l.maxConns)
}

// rateLimitTap refuses calls over the limiter's rate. gRPC runs a tap handler
// as a call arrives, before it reads the request or starts a handler, so a
// refused call costs almost nothing.
func rateLimitTap(lim *rate.Limiter) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if !lim.Allow() {
			return nil, toRPCError(errOverRate)
		}
		return ctx, nil
	}
}
