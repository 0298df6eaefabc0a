package main

import (
	"context"
	"errors"
	"io"
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
			if err := pause(ctx, attempt, base, max, err); err != nil {
				return err
			}
		}
	}
}

// retryStream does for server streams what retryUnary does for calls, as long
// as no message has arrived: until then the call can start over from the
// request. After the first message it cannot, as the caller has seen part of
// the answer, so a failure then is the caller's to handle.
func retryStream(maxAttempts int, base, max time.Duration) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if desc.ClientStreams || !isIdempotent(ctx) {
			return streamer(ctx, desc, cc, method, opts...)
		}
		s := &retryingStream{ctx: ctx, maxAttempts: maxAttempts, base: base, max: max,
			open: func() (grpc.ClientStream, error) { return streamer(ctx, desc, cc, method, opts...) }}
		if err := s.start(); err != nil {
			return nil, err
		}
		return s, nil
	}
}

// retryingStream is a server stream that starts over while nothing has
// arrived. Its caller sends the one request and closes the sending side
// first, as generated code does, so both can be replayed.
type retryingStream struct {
	grpc.ClientStream
	ctx            context.Context
	open           func() (grpc.ClientStream, error)
	maxAttempts    int
	base, max      time.Duration
	attempt        int
	req            any
	sent, received bool
}

// start opens the stream, retrying while that fails temporarily.
func (s *retryingStream) start() error {
	for {
		s.attempt++
		cs, err := s.open()
		if err == nil {
			s.ClientStream = cs
			return nil
		}
		if !temporary(err) || s.attempt >= s.maxAttempts || s.ctx.Err() != nil {
			return err
		}
		if err := pause(s.ctx, s.attempt, s.base, s.max, err); err != nil {
			return err
		}
	}
}

func (s *retryingStream) SendMsg(m any) error {
	s.req, s.sent = m, true
	return s.ClientStream.SendMsg(m)
}

func (s *retryingStream) RecvMsg(m any) error {
	for {
		err := s.ClientStream.RecvMsg(m)
		if err == nil {
			s.received = true
			return nil
		}
		if s.received || !s.sent || errors.Is(err, io.EOF) || !temporary(err) || s.attempt >= s.maxAttempts || s.ctx.Err() != nil {
			return err
		}
		if err := pause(s.ctx, s.attempt, s.base, s.max, err); err != nil {
			return err
		}
		if err := s.start(); err != nil {
			return err
		}
		if err := s.ClientStream.SendMsg(s.req); err != nil {
			return err
		}
		if err := s.ClientStream.CloseSend(); err != nil {
			return err
		}
	}
}

// pause waits before retry number attempt, unless the caller's deadline
// would pass first or its context ends: then it returns the error to end the
// call with.
func pause(ctx context.Context, attempt int, base, max time.Duration, err error) error {
	wait := backoff(attempt, base, max)
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
		return status.Errorf(codes.DeadlineExceeded, "timeout reached before next retry attempt: %s", status.Convert(err).Message())
	}
	timer := time.NewTimer(wait)
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		timer.Stop()
		return status.FromContextError(ctx.Err()).Err()
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
