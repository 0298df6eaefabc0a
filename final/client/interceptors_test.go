package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/fault"
)

// failingInvoker returns an invoker that fails with errs in turn, then succeeds,
// and counts its calls.
func failingInvoker(calls *int, errs ...error) grpc.UnaryInvoker {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		*calls++
		if *calls <= len(errs) {
			return errs[*calls-1]
		}
		return nil
	}
}

var unavailable = status.Error(codes.Unavailable, "down")

func safe(string) bool   { return true }
func unsafe(string) bool { return false }

func TestRetryInfoIsHonouredForSafeMethods(t *testing.T) {
	retry := RetryOnRetryInfo(safe, 4)
	calls := 0
	err := retry(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, apierr.ToStatus(fault.OverRate("service", time.Microsecond))))
	require.NoError(t, err, "a rate limit with RetryInfo is temporary")
	assert.Equal(t, 2, calls)

	calls = 0
	err = retry(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, unavailable))
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Equal(t, 1, calls, "Unavailable is the service config's business, retried below this interceptor")
}

func TestRetryInfoIsIgnoredForMethodsNotSafeToRetry(t *testing.T) {
	retry := RetryOnRetryInfo(unsafe, 4)
	calls := 0
	err := retry(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, apierr.ToStatus(fault.OverRate("service", time.Microsecond))))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Equal(t, 1, calls)
}

func TestRetryDoesNotRetryPermanentErrors(t *testing.T) {
	retry := RetryOnRetryInfo(safe, 4)
	for _, e := range []error{
		apierr.ToStatus(fault.NoKey("k")),
		apierr.ToStatus(fault.OverQuota("t", 3)),
		apierr.ToStatus(fault.BadField("key", "bad")),
		status.Error(codes.ResourceExhausted, "message too large"), // no RetryInfo
		status.Error(codes.DeadlineExceeded, "late"),
	} {
		calls := 0
		err := retry(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, e))
		assert.Equal(t, status.Code(e), status.Code(err))
		assert.Equal(t, 1, calls, "%v", e)
	}
}

// A delay longer than the time left is not waited for, and the caller gets
// the server's refusal with its reason and RetryInfo (it used to get a
// DeadlineExceeded of the interceptor's own, with no reason, before its
// deadline).
func TestRetryStopsBeforeTheDeadlineWithTheServersAnswer(t *testing.T) {
	retry := RetryOnRetryInfo(safe, 4)
	calls := 0
	err := retry(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, apierr.ToStatus(fault.OverRate("service", time.Hour))))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Equal(t, fault.RateLimited, apierr.ReasonOf(err))
	delay, ok := apierr.RetryDelay(err)
	assert.True(t, ok)
	assert.Equal(t, time.Hour, delay)
	assert.Equal(t, 1, calls)
}

func TestRetryStopsAtMaxAttempts(t *testing.T) {
	limited := apierr.ToStatus(fault.OverRate("service", time.Microsecond))
	calls := 0
	err := RetryOnRetryInfo(safe, 3)(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, limited, limited, limited, limited))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Equal(t, 3, calls)
}

// maxAttempts counts as RetryPolicy.MaxAttempts: 0 is the default (it
// used to mean a single attempt), 1 no retry.
func TestRetryOnRetryInfoTakesTheDefaultForZeroAttempts(t *testing.T) {
	limited := apierr.ToStatus(fault.OverRate("service", time.Microsecond))
	many := make([]error, DefaultMaxAttempts+2)
	for i := range many {
		many[i] = limited
	}
	calls := 0
	err := RetryOnRetryInfo(safe, 0)(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, many...))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Equal(t, DefaultMaxAttempts, calls)

	calls = 0
	err = RetryOnRetryInfo(safe, NoRetries.MaxAttempts)(ctxT(t), "/m", nil, nil, nil, failingInvoker(&calls, many...))
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	assert.Equal(t, 1, calls)

	assert.PanicsWithValue(t, "client.RetryOnRetryInfo: negative maxAttempts -1 (1 is no retry, 0 the default)", func() { RetryOnRetryInfo(safe, -1) })
}

func TestKeyAffinitySetsAHeaderFromTheKey(t *testing.T) {
	var got []string
	inv := func(ctx context.Context, method string, r, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		md, _ := metadata.FromOutgoingContext(ctx)
		got = append(got, md.Get(KeyHeader)...)
		return nil
	}
	aff := KeyAffinityUnary()
	require.NoError(t, aff(ctxT(t), "/m", keyed("héllo\n"), nil, nil, inv))
	require.NoError(t, aff(ctxT(t), "/m", keyed("héllo\n"), nil, nil, inv))
	require.NoError(t, aff(ctxT(t), "/m", keyed("other"), nil, nil, inv))
	require.Len(t, got, 3)
	assert.Equal(t, got[0], got[1])
	assert.NotEqual(t, got[0], got[2])
	assert.Regexp(t, "^[0-9a-f]+$", got[0], "any key becomes a valid header value")
}

type keyed string

func (k keyed) GetKey() string { return string(k) }

func TestTokenCredentialsSendABearerTokenOnlyOverTLS(t *testing.T) {
	md, err := TokenCredentials{Token: "abc"}.GetRequestMetadata(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"authorization": "Bearer abc"}, md)
	assert.True(t, TokenCredentials{Token: "abc"}.RequireTransportSecurity())
}
