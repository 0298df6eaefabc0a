package server

import (
	"crypto/tls"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"grpcworkshop.example/final/auth"
	"grpcworkshop.example/final/cache"
	"grpcworkshop.example/final/client"
)

// Configuration throughout final nests by concern, each part with its
// defaults next to it (Default…), and a zero field always means the same:
// the feature is off (no cap, no limit, no delay, nothing cached), never
// "take the default". Where off is not allowed (the lease interval,
// keepalive to peers and Accounts), zero is an error. Two values follow
// another when zero rather than being off: a burst (from its rate) and the
// HTTP body limit (from the largest Store). Start from DefaultCacheConfig
// or DefaultAccountsConfig and change what you need.

// CacheConfig configures one cache replica. Start from DefaultCacheConfig.
type CacheConfig struct {
	Common

	// ReplicaID names this replica: the x-replica response header, logs,
	// and the prefix of its lease at Accounts (which adds random bytes per
	// process, so processes that share a name never share a lease); ""
	// means the hostname.
	ReplicaID string

	Accounts AccountsLink     // how the replica reaches Accounts
	Auth     auth.CacheConfig // how long the replica trusts a token's account
	Limits   Limits           // sizes and call rates
	Peers    Peers            // the other replicas, for forwarding and Dump
	HTTP     WebConfig        // the optional HTTP listener
}

// DefaultCacheConfig is a replica's configuration when no flag is given.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{
		Common:   defaultCommon("localhost:5051", "localhost:9051"),
		Accounts: DefaultAccountsLink(),
		Auth:     auth.DefaultCacheConfig(),
		Limits:   DefaultLimits(),
		Peers:    DefaultPeers(),
		HTTP:     DefaultWebConfig(),
	}
}

// AccountsLink is how a replica reaches the Accounts service.
type AccountsLink struct {
	// Conn is an existing connection to Accounts; if nil, Addr is dialled
	// with TLS (a client certificate, for mutual TLS; nil: plaintext).
	Conn grpc.ClientConnInterface
	Addr string
	TLS  *tls.Config
	// Timeout bounds every lookup and reservation, whatever the caller's
	// deadline, so a hung Accounts fails calls fast (Unavailable with a
	// RetryInfo); RetryAfter is how long a replica then leaves Accounts
	// alone (known tokens are served stale meanwhile), and the retry delay
	// it reports. 0: no bound, no pause.
	Timeout, RetryAfter time.Duration
	// KeepaliveTime and KeepaliveTimeout notice an Accounts cut off over
	// an open connection (its host gone, or a Service still sending the
	// connection to a dead pod): the connection is closed, the address
	// resolved again and a new Accounts reached, instead of every call
	// timing out until the kernel gives up (about 15 minutes). Both must
	// be positive, the time at least client.MinKeepaliveTime.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// LeaseInterval is how often the replica reports its holdings to
	// Accounts, renewing its lease; it must be positive.
	LeaseInterval time.Duration
}

// DefaultAccountsLink: Accounts on localhost:5050, asked for at most a
// second, left alone for half a second after it failed, pinged like any
// server the client dials, and a lease report every 5s.
func DefaultAccountsLink() AccountsLink {
	return AccountsLink{
		Addr:             "localhost:5050",
		Timeout:          time.Second,
		RetryAfter:       500 * time.Millisecond,
		KeepaliveTime:    client.DefaultKeepaliveTime,
		KeepaliveTimeout: client.DefaultKeepaliveTimeout,
		LeaseInterval:    5 * time.Second,
	}
}

func (l AccountsLink) check() error {
	if l.LeaseInterval <= 0 {
		return fmt.Errorf("lease interval must be positive, got %s", l.LeaseInterval)
	}
	if l.Conn == nil {
		if l.Addr == "" {
			return fmt.Errorf("accounts: no address")
		}
		if err := checkKeepalive(l.KeepaliveTime, l.KeepaliveTimeout); err != nil {
			return fmt.Errorf("accounts: %w", err)
		}
	}
	return nil
}

// checkKeepalive refuses keepalive that is off: a cut peer must be noticed.
func checkKeepalive(interval, timeout time.Duration) error {
	if interval <= 0 || timeout <= 0 {
		return fmt.Errorf("keepalive time and timeout must be positive (keepalive cannot be turned off), got %s and %s", interval, timeout)
	}
	_, err := client.KeepaliveParams(interval, timeout)
	return err
}

// Limits bound what one call and all calls may cost a replica.
type Limits struct {
	// Sizes bound keys and values.
	Sizes cache.Limits
	// Rate limits all calls to this replica and TenantRate each tenant, in
	// calls per second; 0 or rate.Inf: no limit. Burst and TenantBurst
	// allow that many calls at once; 0: derived from the rate, a tenth
	// (a fifth for tenants) of a second's worth.
	Rate, TenantRate   rate.Limit
	Burst, TenantBurst int
	// UnauthRate limits, apart from Rate, the calls of callers the replica
	// does not know yet (no token, or one not looked up) and reflection;
	// so a flood without a valid token cannot use up Rate. Health checks
	// are never limited. 0: no limit; UnauthBurst 0: a tenth of a second's.
	UnauthRate  rate.Limit
	UnauthBurst int
}

// DefaultLimits: the domain's sizes, 5000 calls per second per replica,
// 1000 per tenant, 500 from callers not known yet.
func DefaultLimits() Limits {
	return Limits{Sizes: cache.DefaultLimits(), Rate: 5000, TenantRate: 1000, UnauthRate: 500}
}

// limit turns a rate and burst into a limiter's: no limit for 0, and a
// burst of `seconds` of calls for burst 0.
func limit(r rate.Limit, burst int, seconds float64) (rate.Limit, int) {
	if r <= 0 || r == rate.Inf {
		return rate.Inf, 0
	}
	if burst <= 0 {
		burst = max(1, int(float64(r)*seconds))
	}
	return r, burst
}

// Peers are the other replicas, for keyed calls another replica owns and
// for Dump, which gathers from every replica.
type Peers struct {
	// Addrs is every replica, this one included, as clients dial them (a
	// list of host:port or dns:///name:port); "": this replica serves
	// only what it holds. Self is this replica's address among them ("":
	// found from the listening address).
	Addrs, Self string
	// TLS verifies the peers (nil: plaintext); DialOptions are added to
	// the connections to them (stats handlers).
	TLS         *tls.Config
	DialOptions []grpc.DialOption
	// KeepaliveTime and KeepaliveTimeout notice a peer cut off by the
	// network over an open connection, so calls forwarded to it move to
	// the next replica in seconds (client.Options' KeepaliveTime and
	// KeepaliveTimeout). Both must be positive when Addrs is set: a cut
	// peer must be noticed.
	KeepaliveTime, KeepaliveTimeout time.Duration
}

// DefaultPeers: none, with the client's keepalive once there are some.
func DefaultPeers() Peers {
	return Peers{KeepaliveTime: client.DefaultKeepaliveTime, KeepaliveTimeout: client.DefaultKeepaliveTimeout}
}

func (p Peers) check() error {
	if p.Addrs == "" {
		return nil
	}
	if err := checkKeepalive(p.KeepaliveTime, p.KeepaliveTimeout); err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	return nil
}
