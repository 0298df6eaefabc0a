// Package auth carries the tenant's identity as a per-call credential: the
// client sends "authorization: Bearer <token>" in metadata, the server
// resolves the token to an account (through a short-lived cache, so the
// hot path makes no remote call) and puts the account into the context.
package auth

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/fault"
)

const (
	header = "authorization"
	scheme = "Bearer "
	// MaxTokenLen bounds what the server accepts before any lookup.
	MaxTokenLen = 256
)

// TokenCredentials is a credentials.PerRPCCredentials that sends a bearer
// token with every call, and only over TLS unless AllowInsecure (for
// plaintext benchmarks on loopback).
type TokenCredentials struct {
	Token         string
	AllowInsecure bool
}

func (c TokenCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{header: scheme + c.Token}, nil
}

func (c TokenCredentials) RequireTransportSecurity() bool { return !c.AllowInsecure }

// Token reads the bearer token from the incoming metadata.
func Token(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, header)
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
	tok := strings.TrimSpace(v[len(scheme):])
	switch {
	case tok == "":
		return "", fault.NotAuthenticated("empty bearer token")
	case len(tok) > MaxTokenLen:
		return "", fault.NotAuthenticated("bearer token too long")
	}
	return tok, nil
}

// LookupFunc asks the authority (the Accounts service) for a token's account.
type LookupFunc func(ctx context.Context, token string) (accounts.Account, error)

// Authenticator resolves tokens to accounts and remembers each answer for
// TTL: a quota change or a revoked token takes effect within TTL, and a
// tenant's calls make no remote call in between.
type Authenticator struct {
	lookup LookupFunc
	ttl    time.Duration
	now    func() time.Time

	entries sync.Map // token -> entry; read-mostly, so no global lock on the hot path
}

type entry struct {
	acct    *accounts.Account // a pointer: putting it in a context does not allocate
	expires time.Time
}

// NewAuthenticator caches lookup's positive answers for ttl (0: no caching).
func NewAuthenticator(lookup LookupFunc, ttl time.Duration) *Authenticator {
	return &Authenticator{lookup: lookup, ttl: ttl, now: time.Now}
}

// Account returns the account of token, from the cache when fresh.
// Unknown tokens are not cached, so a new token works at once.
func (a *Authenticator) Account(ctx context.Context, token string) (accounts.Account, error) {
	acct, err := a.account(ctx, token)
	if err != nil {
		return accounts.Account{}, err
	}
	return *acct, nil
}

func (a *Authenticator) account(ctx context.Context, token string) (*accounts.Account, error) {
	now := a.now()
	if e, ok := a.entries.Load(token); ok && now.Before(e.(entry).expires) {
		return e.(entry).acct, nil
	}
	acct, err := a.lookup(ctx, token)
	if err != nil {
		a.entries.Delete(token)
		return nil, err
	}
	if a.ttl > 0 {
		a.entries.Store(token, entry{acct: &acct, expires: now.Add(a.ttl)})
	}
	return &acct, nil
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
