// Package auth is the server's side of the tenant's identity, a per-call
// credential: the client sends "authorization: Bearer <token>" in metadata
// (client.TokenCredentials), the server resolves the token to an account (through a short-lived cache, so the
// hot path makes no remote call) and puts the account into the context.
package auth

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/fault"
)

const (
	header = "authorization"
	scheme = "Bearer "
	// MaxTokenLen bounds what the server accepts before any lookup.
	MaxTokenLen = 256
)

// Token reads the bearer token from the incoming metadata.
func Token(ctx context.Context) (string, error) {
	return tokenOf(metadata.ValueFromIncomingContext(ctx, header))
}

// tokenOf checks the authorization values of a call: exactly one, of the
// form "Bearer <token>", the token at most MaxTokenLen visible ASCII
// characters (so a byte that is not UTF-8, a space, a tab or any control
// byte, even trailing, is a malformed token, never a failed lookup nor a
// value that breaks the forward to another replica).
func tokenOf(vals []string) (string, error) {
	switch {
	case len(vals) == 0:
		return "", fault.NotAuthenticated("missing bearer token in authorization metadata")
	case len(vals) > 1:
		return "", fault.NotAuthenticated("more than one authorization value")
	}
	v := vals[0]
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", fault.NotAuthenticated(`authorization must be "Bearer <token>"`)
	}
	tok := v[len(scheme):]
	switch {
	case tok == "":
		return "", fault.NotAuthenticated("empty bearer token")
	case len(tok) > MaxTokenLen:
		return "", fault.NotAuthenticated("bearer token too long")
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < 0x21 || tok[i] > 0x7e {
			return "", fault.NotAuthenticated("bearer token must be visible ASCII")
		}
	}
	return tok, nil
}

// LookupFunc asks the authority (the Accounts service) for a token's account.
type LookupFunc func(ctx context.Context, token string) (accounts.Account, error)

// Authenticator resolves tokens to accounts through a cache (see
// CacheConfig): an answer is used for TTL; past it the token is looked up
// again, and if Accounts cannot answer, the old answer serves for up to
// Stale more (stale-if-error). Tokens Accounts refused are refused for
// NegativeTTL without asking. Concurrent calls with the same token share
// one lookup, and after a failed one Accounts is left alone for
// RetryAfter: known tokens are served stale, others fail at once with
// Unavailable and a RetryInfo.
type Authenticator struct {
	lookup LookupFunc
	cfg    CacheConfig
	up     Upstream
	now    func() time.Time

	// Observe, if set before the first call, hears how each token was
	// resolved: "hit" (fresh in the cache), "miss" (Accounts answered),
	// "stale" (served past TTL because Accounts did not answer),
	// "unknown" (no account has it, said now or moments ago) or "error"
	// (no answer and nothing to serve). For metrics; it must be cheap.
	Observe func(result string)

	entries sync.Map // token -> entry; read-mostly, so no global lock on the hot path
	neg     negativeCache

	mu        sync.Mutex
	flights   map[string]*flight[*accounts.Account]
	downUntil time.Time // Accounts failed: not asked again before this
}

type entry struct {
	acct    *accounts.Account // a pointer: putting it in a context does not allocate
	fetched time.Time
}

// NewAuthenticator caches lookup's answers as cfg says, and asks Accounts
// as up says; cfg.TTL 0 caches nothing (every call asks Accounts).
func NewAuthenticator(lookup LookupFunc, cfg CacheConfig, up Upstream) *Authenticator {
	if cfg.TTL <= 0 {
		cfg.TTL, cfg.Stale, cfg.NegativeTTL = 0, 0, 0
	}
	return &Authenticator{
		lookup: lookup, cfg: cfg, up: up, now: time.Now,
		neg:     negativeCache{max: cfg.MaxNegative},
		flights: map[string]*flight[*accounts.Account]{},
	}
}

// Account returns the account of token: from the cache when fresh, else
// from Accounts, else (Accounts unreachable) from the cache while stale.
func (a *Authenticator) Account(ctx context.Context, token string) (accounts.Account, error) {
	acct, err := a.account(ctx, token)
	if err != nil {
		return accounts.Account{}, err
	}
	return *acct, nil
}

func (a *Authenticator) account(ctx context.Context, token string) (*accounts.Account, error) {
	now := a.now()
	e, cached := a.cached(token)
	if cached && now.Sub(e.fetched) < a.cfg.TTL {
		a.observe("hit")
		return e.acct, nil
	}
	stale := cached && now.Sub(e.fetched) < a.cfg.TTL+a.cfg.Stale
	if !cached && a.cfg.NegativeTTL > 0 && a.neg.has(token, now) {
		a.observe("unknown")
		return nil, fault.NoAccount()
	}
	if a.isDown(now) {
		if stale {
			a.observe("stale")
			return e.acct, nil
		}
		a.observe("error")
		return nil, a.unavailable(nil)
	}
	acct, err := a.fetch(ctx, token)
	switch r := fault.ReasonOf(err); {
	case err == nil:
		a.observe("miss")
	case stale && r == fault.AccountsUnavailable:
		a.observe("stale")
		return e.acct, nil
	case r == fault.UnknownToken:
		a.observe("unknown")
	default:
		a.observe("error")
	}
	return acct, err
}

func (a *Authenticator) observe(result string) {
	if a.Observe != nil {
		a.Observe(result)
	}
}

func (a *Authenticator) cached(token string) (entry, bool) {
	v, ok := a.entries.Load(token)
	if !ok {
		return entry{}, false
	}
	return v.(entry), true
}

// Known reports whether token's account is in the cache (fresh or stale):
// the admission tap counts such calls against the paying tenants' budget.
// With caching off, every well-formed token counts as known.
func (a *Authenticator) Known(token string) bool {
	if a.cfg.TTL == 0 {
		return true
	}
	e, ok := a.cached(token)
	return ok && a.now().Sub(e.fetched) < a.cfg.TTL+a.cfg.Stale
}

// Refused reports whether Accounts refused token within NegativeTTL.
func (a *Authenticator) Refused(token string) bool {
	return a.cfg.NegativeTTL > 0 && a.neg.has(token, a.now())
}

// Admit judges a call's metadata before anything else is read: it returns
// the token's error (missing, malformed, or refused moments ago) and
// whether the token belongs to a known tenant.
func (a *Authenticator) Admit(md metadata.MD) (known bool, err error) {
	tok, err := tokenOf(md.Get(header))
	if err != nil {
		return false, err
	}
	if a.Known(tok) {
		return true, nil
	}
	if a.Refused(tok) {
		return false, fault.NoAccount()
	}
	return false, nil
}

func (a *Authenticator) isDown(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return now.Before(a.downUntil)
}

func (a *Authenticator) unavailable(cause error) error {
	return &fault.Error{
		Reason: fault.AccountsUnavailable, Msg: "accounts service unavailable",
		RetryAfter: a.up.RetryAfter, Err: cause,
	}
}

// fetch looks token up once for all concurrent callers. The lookup runs on
// its own, so a caller that gives up does not fail the others: it carries
// the first caller's values and deadline (the deadline propagates to
// Accounts), bounded by LookupTimeout. A caller whose lookup ended at
// another caller's deadline, while its own has not passed, asks again.
func (a *Authenticator) fetch(ctx context.Context, token string) (*accounts.Account, error) {
	for attempt := 1; ; attempt++ {
		a.mu.Lock()
		f, ok := a.flights[token]
		if !ok {
			// A lookup may have finished since the caller found the entry
			// stale: it stores the entry before it leaves flights.
			if e, cached := a.cached(token); cached && a.cfg.TTL > 0 && a.now().Sub(e.fetched) < a.cfg.TTL {
				a.mu.Unlock()
				return e.acct, nil
			}
			f = &flight[*accounts.Account]{done: make(chan struct{})}
			a.flights[token] = f
			var limit time.Time // zero: no bound but the caller's
			own := a.up.LookupTimeout > 0
			if own {
				limit = a.now().Add(a.up.LookupTimeout)
			}
			if dl, ok := ctx.Deadline(); ok && (limit.IsZero() || dl.Before(limit)) {
				limit, own = dl, false
			}
			go a.run(context.WithoutCancel(ctx), limit, own, token, f)
		}
		a.mu.Unlock()
		acct, err := waitFlight(ctx, f)
		if r := fault.ReasonOf(err); (r == fault.DeadlineExceeded || r == fault.Canceled) && ctx.Err() == nil && attempt < 3 {
			continue
		}
		return acct, err
	}
}

// run is one lookup, until deadline (zero: none); own says the deadline is
// LookupTimeout's rather than a caller's.
func (a *Authenticator) run(ctx context.Context, deadline time.Time, own bool, token string, f *flight[*accounts.Account]) {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	var acct *accounts.Account
	found, err := a.lookup(ctx, token)
	now := a.now()
	switch r := fault.ReasonOf(err); {
	case err == nil:
		acct = &found
		if a.cfg.TTL > 0 {
			a.entries.Store(token, entry{acct: acct, fetched: now})
		}
		a.neg.remove(token)
	case r == fault.UnknownToken:
		a.entries.Delete(token)
		if a.cfg.NegativeTTL > 0 {
			a.neg.add(token, now.Add(a.cfg.NegativeTTL), now)
		}
	case r == fault.AccountsUnavailable, own && ctx.Err() != nil:
		// Accounts is down, hung or too slow: say so now, and spare it
		// (and every caller) further attempts for a moment.
		err = a.unavailable(err)
	}
	a.mu.Lock()
	switch {
	case fault.ReasonOf(err) == fault.AccountsUnavailable:
		a.downUntil = now.Add(a.up.RetryAfter)
	case err == nil || fault.ReasonOf(err) == fault.UnknownToken:
		a.downUntil = time.Time{} // it answered
	}
	delete(a.flights, token)
	a.mu.Unlock()
	f.val, f.err = acct, err
	close(f.done)
}

type accountKey struct{}

// WithAccount returns ctx carrying the caller's account.
func WithAccount(ctx context.Context, acct *accounts.Account) context.Context {
	return context.WithValue(ctx, accountKey{}, acct)
}

// AccountFrom returns the account the auth interceptor put into ctx.
func AccountFrom(ctx context.Context) (accounts.Account, bool) {
	acct, ok := ctx.Value(accountKey{}).(*accounts.Account)
	if !ok {
		return accounts.Account{}, false
	}
	return *acct, true
}

// TenantFrom returns the caller's tenant, or an Unauthenticated error when
// no account is in ctx (the auth interceptor is missing).
func TenantFrom(ctx context.Context) (string, error) {
	acct, ok := AccountFrom(ctx)
	if !ok {
		return "", fault.NotAuthenticated("no account")
	}
	return acct.Tenant, nil
}

// Public reports methods that need no token (health checks, reflection).
func Public(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func (a *Authenticator) authenticate(ctx context.Context) (context.Context, error) {
	tok, err := Token(ctx)
	if err != nil {
		return nil, err
	}
	acct, err := a.account(ctx, tok)
	if err != nil {
		return nil, err
	}
	return WithAccount(ctx, acct), nil
}

// UnaryInterceptor authenticates every call but the public ones.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if Public(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, err := a.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates every stream but the public ones.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if Public(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, err := a.authenticate(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &ContextStream{ServerStream: ss, Ctx: ctx})
	}
}

// ContextStream is a ServerStream with a replaced context.
type ContextStream struct {
	grpc.ServerStream
	Ctx context.Context
}

func (s *ContextStream) Context() context.Context { return s.Ctx }
