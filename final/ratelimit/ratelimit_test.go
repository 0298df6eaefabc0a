package ratelimit

import (
	"context"
	"grpcworkshop.example/final/rpc"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/apierr"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/fault"
)

func TestAdmissionTapKeepsThePayingBudgetForKnownTenantsAndNeverLimitsHealth(t *testing.T) {
	admit := func(md metadata.MD) (bool, error) {
		switch v := md.Get("authorization"); {
		case len(v) == 0:
			return false, fault.NotAuthenticated("missing bearer token")
		case v[0] == "known":
			return true, nil
		case v[0] == "refused":
			return false, fault.NoAccount()
		}
		return false, nil
	}
	public := func(m string) bool { return m == "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" }
	h := AdmissionTap(Budgets{Paying: 1e-9, PayingBurst: 2, Unauthenticated: 1e-9, UnauthenticatedBurst: 1}, public, admit)
	call := func(method, auth string) error {
		md := metadata.MD{}
		if auth != "" {
			md.Set("authorization", auth)
		}
		_, err := h(context.Background(), &tap.Info{FullMethodName: method, Header: md})
		return err
	}
	const get = rpc.Cache_Get_FullMethodName

	err := call(get, "")
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "no token: refused before anything is read")
	assert.Equal(t, fault.Unauthenticated, apierr.ReasonOf(err))
	assert.Equal(t, fault.UnknownToken, apierr.ReasonOf(call(get, "refused")), "refused moments ago")

	require.NoError(t, call(get, "new"), "a token not looked up yet: the unauthenticated budget")
	err = call("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "")
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "which is now used up, for reflection too")
	d, ok := apierr.RetryDelay(err)
	assert.True(t, ok && d > 0, "with a RetryInfo")

	require.NoError(t, call(get, "known"), "known tenants draw on the paying budget, untouched by the others")
	require.NoError(t, call(get, "known"))
	assert.Equal(t, codes.ResourceExhausted, status.Code(call(get, "known")), "until it is used up")

	for range 100 {
		require.NoError(t, call("/grpc.health.v1.Health/Check", ""), "health is never limited")
		require.NoError(t, call("/grpc.health.v1.Health/Watch", ""))
	}
}

// BenchmarkAdmissionTap is the tap's cost for a known tenant's call (the
// hot path): the token's form, one cache lookup, one limiter.
func BenchmarkAdmissionTap(b *testing.B) {
	authn := auth.NewAuthenticator(func(context.Context, string) (accounts.Account, error) {
		return accounts.Account{Tenant: "t"}, nil
	}, auth.CacheConfig{TTL: time.Hour}, auth.Upstream{})
	_, err := authn.Account(context.Background(), "tok")
	require.NoError(b, err)
	h := AdmissionTap(Budgets{Paying: rate.Inf, Unauthenticated: rate.Inf}, auth.Public, authn.Admit)
	info := &tap.Info{FullMethodName: rpc.Cache_Get_FullMethodName, Header: metadata.Pairs("authorization", "Bearer tok")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(ctx, info); err != nil {
			b.Fatal(err)
		}
	}
}
