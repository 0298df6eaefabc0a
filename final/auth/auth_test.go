package auth

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/fault"
)

func TestAuthenticatorCachesAccountsForTTLOnly(t *testing.T) {
	valid := map[string]bool{"tok": true}
	calls := 0
	a := NewAuthenticator(func(ctx context.Context, token string) (accounts.Account, error) {
		calls++
		if !valid[token] {
			return accounts.Account{}, fault.NoAccount()
		}
		return accounts.Account{Tenant: "t"}, nil
	}, CacheConfig{TTL: 5 * time.Second}, Upstream{})
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	ctx := context.Background()

	for range 10 {
		_, err := a.Account(ctx, "tok")
		require.NoError(t, err)
	}
	assert.Equal(t, 1, calls, "one lookup, then the cache")

	delete(valid, "tok") // revoked
	now = now.Add(4 * time.Second)
	_, err := a.Account(ctx, "tok")
	assert.NoError(t, err, "still cached within the TTL")
	now = now.Add(2 * time.Second)
	_, err = a.Account(ctx, "tok")
	assert.ErrorIs(t, err, fault.ErrUnknownToken, "revoked once the TTL passed")

	valid["new"] = true
	for range 2 {
		_, err = a.Account(ctx, "unknown")
		assert.Error(t, err)
	}
	_, err = a.Account(ctx, "new")
	assert.NoError(t, err, "a new token works at once unless it was refused within the negative TTL")
}
