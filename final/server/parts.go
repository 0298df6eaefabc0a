package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/tap"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/accountsclient"
	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/ratelimit"
	"grpcworkshop.example/final/telemetry"
)

// The parts NewCache assembles, each built here on its own.

// complete fills in what the configuration leaves to the host (the
// replica's name) and refuses what cannot run.
func (cfg *CacheConfig) complete() error {
	if cfg.ReplicaID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("replica id: %w", err)
		}
		cfg.ReplicaID = h
	}
	if err := cfg.Accounts.check(); err != nil {
		return err
	}
	return cfg.Peers.check()
}

// metrics is the server's metrics; nil (every method a no-op) without
// telemetry.
func (c *Common) metrics() *telemetry.Metrics {
	if c.Telemetry == nil {
		return nil
	}
	return c.Telemetry.Metrics
}

// closers are what a server closes when it stops (or when building it
// failed halfway).
type closers []func() error

func (c *closers) add(f func() error) { *c = append(*c, f) }

func (c closers) close() {
	for _, f := range c {
		_ = f()
	}
}

// dialAccounts is the replica's connection to Accounts: l.Conn if given,
// else a new one to l.Addr (closed with the server).
func dialAccounts(l AccountsLink, tel *telemetry.Telemetry, log *slog.Logger, cl *closers) (grpc.ClientConnInterface, error) {
	if l.Conn != nil {
		return l.Conn, nil
	}
	ka, err := client.KeepaliveParams(l.KeepaliveTime, l.KeepaliveTimeout)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	creds := insecure.NewCredentials()
	if l.TLS != nil {
		creds = credentials.NewTLS(l.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Reach a returning Accounts within about a second: gRPC's
		// default backoff grows to 120s, and a connection attempt to a
		// hung one would wait 20s.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: client.DefaultConnectTimeout,
		}),
		grpc.WithKeepaliveParams(ka),
		grpc.WithChainUnaryInterceptor(client.LogUnaryClient(log.With("peer", "accounts"))),
	}
	if tel != nil {
		opts = append(opts, tel.DialOption())
	}
	cc, err := grpc.NewClient(l.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial accounts: %w", err)
	}
	cl.add(cc.Close)
	return cc, nil
}

// newAccountsClient is the replica's client of Accounts, bounded as l says.
func newAccountsClient(conn grpc.ClientConnInterface, l AccountsLink) *accountsclient.Client {
	a := accountsclient.New(conn)
	a.Timeout, a.RetryAfter = l.Timeout, l.RetryAfter
	return a
}

// meter counts the quota calls to a (nil metrics: a itself).
func meter(a cache.Authority, m *telemetry.Metrics) cache.Authority {
	if m == nil {
		return a
	}
	return meteredAuthority{a, m}
}

// newAuthenticator resolves tokens through Accounts with the token cache.
// The caller's context reaches Accounts: its deadline (capped) propagates.
func newAuthenticator(a *accountsclient.Client, cfg auth.CacheConfig, l AccountsLink, m *telemetry.Metrics) *auth.Authenticator {
	authn := auth.NewAuthenticator(a.Account, cfg, auth.Upstream{LookupTimeout: l.Timeout, RetryAfter: l.RetryAfter})
	if m != nil {
		authn.Observe = m.AuthLookup
	}
	return authn
}

// newForwarder sends keyed calls to the replica that owns their key; nil
// without peers.
func newForwarder(p Peers, id string, tel *telemetry.Telemetry, log *slog.Logger, cl *closers) (*forward.Forwarder, error) {
	if p.Addrs == "" {
		return nil, nil
	}
	fc := forward.Config{
		Peers: p.Addrs, Self: p.Self, ID: id, TLS: p.TLS, Logger: log,
		DialOptions:   append([]grpc.DialOption(nil), p.DialOptions...),
		KeepaliveTime: p.KeepaliveTime, KeepaliveTimeout: p.KeepaliveTimeout,
	}
	if tel != nil {
		// The hop is a span of its own, the owner's call its child.
		fc.DialOptions = append(fc.DialOptions, tel.DialOption())
		fc.Traced = tel.TracerProvider() != nil
	}
	f, err := forward.New(fc)
	if err != nil {
		return nil, err
	}
	cl.add(f.Close)
	return f, nil
}

// admissionTap judges a call before its message is read: its token's
// form, and whose budget it draws on. The HTTP listener runs the same tap.
func admissionTap(l Limits, authn *auth.Authenticator) tap.ServerInHandle {
	r, burst := limit(l.Rate, l.Burst, 0.1)
	ur, uburst := limit(l.UnauthRate, l.UnauthBurst, 0.1)
	return ratelimit.AdmissionTap(ratelimit.Budgets{
		Paying: r, PayingBurst: burst, Unauthenticated: ur, UnauthenticatedBurst: uburst,
	}, auth.Public, authn.Admit)
}

// leaseName begins the replica's lease ids at Accounts: the replica name
// its client certificate for Accounts names (spiffe://TD/replica/NAME;
// Accounts takes only lease ids NAME/… from it), else id.
func leaseName(t *tls.Config, id string) string {
	if t == nil || len(t.Certificates) == 0 {
		return id
	}
	c := t.Certificates[0]
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf != nil {
		for _, u := range leaf.URIs {
			if name, ok := accounts.ReplicaName(u.String()); ok {
				return name
			}
		}
	}
	return id
}
