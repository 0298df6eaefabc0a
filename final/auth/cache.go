package auth

import (
	"context"
	"sync"
	"time"
)

// CacheConfig says how long the account cache trusts what it was told. As
// everywhere in final, a zero field turns its feature off (nothing cached,
// no bound); DefaultCacheConfig has the defaults.
type CacheConfig struct {
	// TTL is how long an answer is used without asking again: a revoked
	// token works at most this long while Accounts answers. 0: nothing is
	// cached, every call asks Accounts.
	TTL time.Duration
	// Stale is how long past TTL a known token keeps working while
	// Accounts cannot be reached (stale-if-error); 0: not at all.
	Stale time.Duration
	// NegativeTTL is how long a token Accounts does not know is refused
	// without asking again; 0: not remembered.
	NegativeTTL time.Duration
	// MaxNegative bounds the negative cache's entries, so made-up tokens
	// cannot grow it without limit; 0: no bound.
	MaxNegative int
}

// DefaultCacheConfig: a revoked token works for at most 5s; a known token
// keeps working for 5 minutes while Accounts is down (see "Admission and
// Accounts trouble" in final/docs/design.md); an unknown token is refused
// for a second without asking.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{TTL: 5 * time.Second, Stale: 5 * time.Minute, NegativeTTL: time.Second, MaxNegative: 10000}
}

// Upstream is how the cache treats Accounts when it asks.
type Upstream struct {
	// LookupTimeout bounds one lookup, whatever the caller's deadline, so
	// a hung Accounts costs a call this long at most; 0: no bound of its
	// own (the first caller's deadline).
	LookupTimeout time.Duration
	// RetryAfter is how long after Accounts failed to answer the cache
	// waits before asking again: meanwhile known tokens are served stale
	// and unknown ones fail at once. It is also the retry delay reported.
	// 0: no pause.
	RetryAfter time.Duration
}

// flight is one lookup in progress; every caller of the same token waits
// for it instead of asking Accounts again (singleflight).
type flight[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// negativeCache remembers refused tokens for a short time, bounded in size
// so made-up tokens cannot grow it without limit.
type negativeCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]time.Time // token -> expiry
}

func (n *negativeCache) has(tok string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.entries[tok]
	if ok && !now.Before(exp) {
		delete(n.entries, tok)
		return false
	}
	return ok
}

func (n *negativeCache) add(tok string, exp, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil {
		n.entries = map[string]time.Time{}
	}
	if n.max > 0 && len(n.entries) >= n.max {
		for k, e := range n.entries {
			if !now.Before(e) {
				delete(n.entries, k)
			}
		}
		if n.max > 0 && len(n.entries) >= n.max {
			return // full of live entries: those tokens are asked about again
		}
	}
	n.entries[tok] = exp
}

func (n *negativeCache) remove(tok string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.entries, tok)
}

// waitFlight waits for f or ctx, whichever ends first.
func waitFlight[V any](ctx context.Context, f *flight[V]) (V, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}
