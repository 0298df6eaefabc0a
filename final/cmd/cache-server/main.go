// Command cache-server runs one cache replica. Run several, each with its
// own -id, behind one Accounts service.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"grpcworkshop/final/cache"
	"grpcworkshop/final/internal/cli"
	"grpcworkshop/final/server"
	"grpcworkshop/final/tlsutil"
)

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cache-server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("cache-server", flag.ContinueOnError)
	addr := cli.String(fs, "addr", "CACHE_LISTEN", "localhost:5051", "address to listen on")
	id := cli.String(fs, "id", "REPLICA_ID", "", "unique, stable replica name, e.g. the pod name (default: hostname)")
	accountsAddr := cli.String(fs, "accounts", "ACCOUNTS_ADDR", "localhost:5050", "Accounts service address")
	cert := cli.String(fs, "cert", "TLS_CERT", ".dev/server.crt", "server certificate")
	key := cli.String(fs, "key", "TLS_KEY", ".dev/server.key", "server key")
	ca := cli.String(fs, "ca", "TLS_CA", ".dev/ca.crt", "CA that signed Accounts' certificate")
	clientCert := cli.String(fs, "client-cert", "TLS_CLIENT_CERT", ".dev/client.crt", "client certificate presented to Accounts")
	clientKey := cli.String(fs, "client-key", "TLS_CLIENT_KEY", ".dev/client.key", "client key")
	authTTL := cli.Duration(fs, "auth-ttl", "AUTH_TTL", 5*time.Second, "how long a token's account is cached (a revoked token works at most this long)")
	leaseInterval := cli.Duration(fs, "lease-interval", "LEASE_INTERVAL", 5*time.Second, "how often holdings are reported to Accounts")
	maxDeadline := cli.Duration(fs, "max-deadline", "MAX_DEADLINE", 10*time.Second, "longest any call may run")
	maxAge := cli.Duration(fs, "max-connection-age", "MAX_CONNECTION_AGE", 5*time.Minute, "connections are closed after this long, so clients re-resolve")
	drain := cli.Duration(fs, "drain-delay", "DRAIN_DELAY", 0, "how long to report NOT_SERVING before refusing new calls")
	grace := cli.Duration(fs, "grace", "SHUTDOWN_GRACE", 10*time.Second, "how long shutdown waits for calls in flight")
	rps := cli.Float(fs, "rate", "RATE", 5000, "calls per second for the whole replica; 0 for no limit")
	tenantRPS := cli.Float(fs, "tenant-rate", "TENANT_RATE", 1000, "calls per second per tenant; 0 for no limit")
	level := cli.String(fs, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(*level)
	if err != nil {
		return err
	}
	srvTLS, err := tlsutil.ServerConfig(*cert, *key, "")
	if err != nil {
		return fmt.Errorf("%w (for development certificates run go run ./final/cmd/devstack once)", err)
	}
	accTLS, err := tlsutil.ClientConfig(*ca, *clientCert, *clientKey)
	if err != nil {
		return err
	}
	limit, burst := cli.Limit(*rps, 0.1)
	tenantLimit, tenantBurst := cli.Limit(*tenantRPS, 0.2)
	srv, err := server.NewCache(server.CacheConfig{
		Common: server.Common{
			TLS: srvTLS, Logger: log, MaxDeadline: *maxDeadline,
			MaxConnectionAge: *maxAge, DrainDelay: *drain,
		},
		ReplicaID:     *id,
		AccountsAddr:  *accountsAddr,
		AccountsTLS:   accTLS,
		AuthTTL:       *authTTL,
		LeaseInterval: *leaseInterval,
		Limits:        cache.Limits{},
		Rate:          limit,
		Burst:         burst,
		TenantRate:    tenantLimit,
		TenantBurst:   tenantBurst,
	})
	if err != nil {
		return err
	}
	return cli.Serve(srv.Server, *addr, *grace, log)
}
