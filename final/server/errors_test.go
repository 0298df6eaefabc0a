package server_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/fault"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
)

// leaky is a handler that fails with a plain Go error whose text must
// never reach a client.
type leaky struct {
	rpc.UnimplementedAccountsServer
}

func (leaky) GetByToken(context.Context, *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	return nil, errors.New("db password hunter2 rejected")
}

func TestAnUnexpectedErrorIsInternalWithAGenericMessage(t *testing.T) {
	var log syncBuffer
	st := startStack(t, stackOpts{logger: slog.New(slog.NewTextHandler(&log, nil)), tuneCache: func(_ int, c *server.CacheConfig) {
		c.Register = func(s *grpc.Server) { rpc.RegisterAccountsServer(s, leaky{}) }
	}})
	conn := dialTarget(t, st, st.CacheAddrs[0], tok, noRetry())

	_, err := rpc.NewAccountsClient(conn).GetByToken(testContext(t), &rpc.GetByTokenReq{Token: "x"})
	s := status.Convert(err)
	assert.Equal(t, codes.Internal, s.Code(), "never Unknown")
	assert.Equal(t, "internal error", s.Message())
	assert.NotContains(t, err.Error(), "hunter2")
	assert.Equal(t, fault.Internal, apierr.ReasonOf(err))
	assert.Contains(t, log.String(), "hunter2", "the cause is in the server's log")
}

// TestEveryErrorPathCarriesADocumentedReason drives each way a call can
// fail through the real stack and checks code and ErrorInfo reason.
func TestEveryErrorPathCarriesADocumentedReason(t *testing.T) {
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) {
		c.Limits.TenantRate, c.Limits.TenantBurst = 0.001, 1000
		c.MaxDeadline = 100 * time.Millisecond
		// A call that asks to block runs into the server's deadline cap.
		c.Unary = append(c.Unary, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if len(metadata.ValueFromIncomingContext(ctx, "x-block")) > 0 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return h(ctx, req)
		})
		c.Register = func(s *grpc.Server) { rpc.RegisterAccountsServer(s, leaky{}) }
	}})
	ctx := testContext(t)
	c := rpc.NewCacheClient(dialTarget(t, st, st.Target(), tok, noRetry()))
	small := rpc.NewCacheClient(dialTarget(t, st, st.Target(), "small", noRetry()))
	for _, k := range []string{"a", "b", "c"} {
		// Under the 100ms cap, a new key's first reservation can outlast
		// the call on a loaded machine; a Store past its deadline is not
		// applied (its slot stays spare), so it is sent again.
		for {
			err := store(ctx, small, k, "v")
			if status.Code(err) != codes.DeadlineExceeded {
				require.NoError(t, err)
				break
			}
		}
	}

	type path struct {
		err    error
		code   codes.Code
		reason fault.Reason
	}
	paths := map[string]path{
		"empty key":     {store(ctx, c, "", "v"), codes.InvalidArgument, fault.InvalidArgument},
		"bad dry-run":   {store(metadata.AppendToOutgoingContext(ctx, client.DryRunHeader, "yes"), c, "k", "v"), codes.InvalidArgument, fault.InvalidArgument},
		"missing key":   {func() error { _, err := get(ctx, c, "nope"); return err }(), codes.NotFound, fault.KeyNotFound},
		"no token":      {store(ctx, rpc.NewCacheClient(dialTarget(t, st, st.Target(), "", noRetry())), "k", "v"), codes.Unauthenticated, fault.Unauthenticated},
		"unknown token": {store(ctx, rpc.NewCacheClient(dialTarget(t, st, st.Target(), "nobody", noRetry())), "k", "v"), codes.Unauthenticated, fault.UnknownToken},
		"quota":         {store(ctx, small, "d", "v"), codes.FailedPrecondition, fault.QuotaExceeded},
		"internal": {func() error {
			_, err := rpc.NewAccountsClient(dialTarget(t, st, st.CacheAddrs[0], tok, noRetry())).GetByToken(ctx, &rpc.GetByTokenReq{})
			return err
		}(), codes.Internal, fault.Internal},
		"deadline": {store(metadata.AppendToOutgoingContext(ctx, "x-block", "1"), c, "k", "v"), codes.DeadlineExceeded, fault.DeadlineExceeded},
	}
	rateLimited := func() error {
		for range 2000 { // the burst is 1000 calls
			if err := store(ctx, small, "a", "v"); err != nil {
				return err
			}
		}
		return nil
	}()
	paths["tenant rate"] = path{rateLimited, codes.ResourceExhausted, fault.RateLimited}
	st.Accounts.Stop()
	paths["accounts down"] = path{store(ctx, c, "new", "v"), codes.Unavailable, fault.AccountsUnavailable}

	documented := map[fault.Reason]bool{}
	for _, r := range apierr.Reasons() {
		documented[r] = true
	}
	for name, p := range paths {
		assert.Equal(t, p.code, status.Code(p.err), "%s: %v", name, p.err)
		assert.Equal(t, p.reason, apierr.ReasonOf(p.err), "%s: %v", name, p.err)
		assert.True(t, documented[p.reason], name)
		assert.NotContains(t, strings.ToLower(status.Convert(p.err).Message()), "rpc error", name)
	}
}
