package auth

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/fault"
)

// fakeAccounts is a lookup whose answers a test controls.
type fakeAccounts struct {
	mu    sync.Mutex
	valid map[string]bool
	down  bool
	hang  bool
	calls atomic.Int64
	gate  chan struct{} // if set, every lookup waits for it
}

func (f *fakeAccounts) lookup(ctx context.Context, token string) (accounts.Account, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	valid, down, hang := f.valid[token], f.down, f.hang
	f.mu.Unlock()
	switch {
	case hang:
		<-ctx.Done()
		return accounts.Account{}, &fault.Error{Reason: fault.DeadlineExceeded, Err: ctx.Err()}
	case down:
		return accounts.Account{}, fault.AccountsDown(nil)
	case !valid:
		return accounts.Account{}, fault.NoAccount()
	}
	return accounts.Account{Tenant: token}, nil
}

func (f *fakeAccounts) set(fn func(f *fakeAccounts)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestAuth(f *fakeAccounts, cfg CacheConfig, up ...Upstream) (*Authenticator, *clock) {
	if len(up) == 0 {
		up = []Upstream{{}}
	}
	a := NewAuthenticator(f.lookup, cfg, up[0])
	c := &clock{now: time.Unix(1000, 0)}
	a.now = c.Now
	return a, c
}

func TestKnownTokensServeStaleWhileAccountsIsDownForStaleOnly(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{"tok": true}}
	a, clk := newTestAuth(f, CacheConfig{TTL: 5 * time.Second, Stale: time.Minute}, Upstream{RetryAfter: time.Second})
	ctx := context.Background()
	_, err := a.Account(ctx, "tok")
	require.NoError(t, err)

	f.set(func(f *fakeAccounts) { f.down = true })
	clk.Add(6 * time.Second) // past TTL: asked again, Accounts is down, stale serves
	acct, err := a.Account(ctx, "tok")
	require.NoError(t, err, "stale-if-error")
	assert.Equal(t, "tok", acct.Tenant)
	calls := f.calls.Load()
	_, err = a.Account(ctx, "tok")
	require.NoError(t, err)
	assert.Equal(t, calls, f.calls.Load(), "within RetryAfter of a failure Accounts is not asked again")

	_, err = a.Account(ctx, "other")
	assert.ErrorIs(t, err, fault.ErrAccountsUnavailable, "a token never seen fails at once")
	assert.Equal(t, time.Second, err.(*fault.Error).RetryAfter, "with a retry delay")

	clk.Add(5*time.Second + time.Minute) // past TTL + Stale
	_, err = a.Account(ctx, "tok")
	assert.ErrorIs(t, err, fault.ErrAccountsUnavailable, "stale answers end after Stale")

	f.set(func(f *fakeAccounts) { f.down = false })
	clk.Add(time.Second)
	_, err = a.Account(ctx, "tok")
	assert.NoError(t, err, "Accounts is back")
}

func TestRevokedTokenStopsAtTTLWhileAccountsAnswers(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{"tok": true}}
	a, clk := newTestAuth(f, CacheConfig{TTL: 5 * time.Second, Stale: time.Minute})
	ctx := context.Background()
	_, err := a.Account(ctx, "tok")
	require.NoError(t, err)
	f.set(func(f *fakeAccounts) { delete(f.valid, "tok") })
	clk.Add(4 * time.Second)
	_, err = a.Account(ctx, "tok")
	assert.NoError(t, err, "within TTL")
	clk.Add(2 * time.Second)
	_, err = a.Account(ctx, "tok")
	assert.ErrorIs(t, err, fault.ErrUnknownToken, "revoked once the TTL passed: stale answers are only for Accounts down")
	assert.False(t, a.Known("tok"))
}

func TestConcurrentCallsOfAnExpiredTokenShareOneLookup(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{"tok": true}}
	a, clk := newTestAuth(f, CacheConfig{TTL: 5 * time.Second})
	ctx := context.Background()
	_, err := a.Account(ctx, "tok")
	require.NoError(t, err)
	clk.Add(6 * time.Second)

	f.gate = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			_, err := a.Account(ctx, "tok")
			errs <- err
		})
	}
	// Every caller is now waiting on the one lookup, or about to join it.
	require.Eventually(t, func() bool { return f.calls.Load() == 2 }, 5*time.Second, time.Millisecond)
	close(f.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int64(2), f.calls.Load(), "one lookup for the first call, one for 100 concurrent calls after expiry")
}

func TestUnknownTokensAreRememberedForNegativeTTL(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{}}
	a, clk := newTestAuth(f, CacheConfig{TTL: 5 * time.Second, NegativeTTL: time.Second})
	ctx := context.Background()
	for range 10 {
		_, err := a.Account(ctx, "new")
		assert.ErrorIs(t, err, fault.ErrUnknownToken)
	}
	assert.Equal(t, int64(1), f.calls.Load(), "asked once")
	assert.True(t, a.Refused("new"))
	known, err := a.Admit(metadata.Pairs("authorization", "Bearer new"))
	assert.False(t, known)
	assert.ErrorIs(t, err, fault.ErrUnknownToken, "the admission tap refuses it without a lookup")

	f.set(func(f *fakeAccounts) { f.valid["new"] = true }) // the token is created
	clk.Add(time.Second)
	_, err = a.Account(ctx, "new")
	assert.NoError(t, err, "works once the negative entry expired")
	known, err = a.Admit(metadata.Pairs("authorization", "Bearer new"))
	assert.NoError(t, err)
	assert.True(t, known)
}

func TestNegativeCacheIsBounded(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{}}
	a, _ := newTestAuth(f, CacheConfig{TTL: time.Second, NegativeTTL: time.Minute, MaxNegative: 3})
	for _, tok := range []string{"a", "b", "c", "d"} {
		_, err := a.Account(context.Background(), tok)
		assert.ErrorIs(t, err, fault.ErrUnknownToken)
	}
	assert.Len(t, a.neg.entries, 3)
	assert.False(t, a.Refused("d"), "a full cache takes no more")
}

func TestHungAccountsCostsALookupTimeoutNotTheCallersDeadline(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{"tok": true}, hang: true}
	a, _ := newTestAuth(f, CacheConfig{TTL: time.Second}, Upstream{LookupTimeout: 50 * time.Millisecond, RetryAfter: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := a.Account(ctx, "tok")
	assert.ErrorIs(t, err, fault.ErrAccountsUnavailable, "the lookup's own timeout, reported as Accounts unavailable")
	assert.NoError(t, ctx.Err(), "long before the caller's deadline")
	_, err = a.Account(ctx, "tok2")
	assert.ErrorIs(t, err, fault.ErrAccountsUnavailable)
	assert.Equal(t, int64(1), f.calls.Load(), "and Accounts is not asked again within RetryAfter")
}

func TestAdmitJudgesTheTokenFromMetadataAlone(t *testing.T) {
	f := &fakeAccounts{valid: map[string]bool{"tok": true}}
	a, _ := newTestAuth(f, CacheConfig{TTL: time.Second})
	for _, md := range []metadata.MD{
		{},
		metadata.Pairs("authorization", "Basic abc"),
		metadata.Pairs("authorization", "Bearer to\xffk"),
		metadata.Pairs("authorization", "Bearer to k"),
		metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b"),
	} {
		_, err := a.Admit(md)
		assert.ErrorIs(t, err, fault.ErrUnauthenticated, "%v", md)
	}
	known, err := a.Admit(metadata.Pairs("authorization", "Bearer tok"))
	require.NoError(t, err)
	assert.False(t, known, "not looked up yet")
	_, err = a.Account(context.Background(), "tok")
	require.NoError(t, err)
	known, err = a.Admit(metadata.Pairs("authorization", "Bearer tok"))
	require.NoError(t, err)
	assert.True(t, known)
	assert.Zero(t, f.calls.Load()-1, "Admit never asks Accounts")
}
