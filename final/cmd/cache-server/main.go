// Command cache-server runs one cache replica. Run several, each with its
// own -id, behind one Accounts service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"grpcworkshop.example/final/internal/cli"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/telemetry"
	"grpcworkshop.example/final/tlsutil"
	"grpcworkshop.example/final/web"
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

// config is everything cache-server can be told: the server's own
// configuration plus the files it is read from.
type config struct {
	server.CacheConfig
	Cert, Key, CA, ClientCert, ClientKey string
	LogLevel, LogFormat                  string
	// CORSOrigins and ConsoleReplicas are comma-separated lists for
	// CacheConfig.Web.
	CORSOrigins, ConsoleReplicas string
	// MemoryLimitRatio of the container's memory limit is the Go memory
	// limit (cli.MemoryLimit); GOMEMLIMIT wins; 0: none.
	MemoryLimitRatio float64
}

// defaultConfig is what runs when no flag or variable is given.
func defaultConfig() config {
	return config{
		CacheConfig: server.DefaultCacheConfig(),
		Cert:        ".dev/server.crt", Key: ".dev/server.key", CA: ".dev/ca.crt",
		ClientCert: ".dev/client.crt", ClientKey: ".dev/client.key",
		LogLevel: "info", LogFormat: "text",
		MemoryLimitRatio: 0.9,
	}
}

// bind is the one place flags and $CACHE_… variables meet the config.
func (c *config) bind(fs *flag.FlagSet) {
	f := cli.New(fs, "CACHE_")
	f.String(&c.Addr, "addr", "address to listen on")
	f.String(&c.ReplicaID, "id", "replica name, e.g. the pod name (empty: hostname); its lease at Accounts adds a random suffix per process")
	f.String(&c.Accounts.Addr, "accounts", "Accounts service address")
	f.String(&c.Cert, "cert", "server certificate")
	f.String(&c.Key, "key", "server key")
	f.String(&c.CA, "ca", "CA that signed Accounts' certificate")
	f.String(&c.ClientCert, "client-cert", "client certificate presented to Accounts")
	f.String(&c.ClientKey, "client-key", "client key")
	f.Duration(&c.Auth.TTL, "auth-ttl", "how long a token's account is cached (a revoked token works at most this long); 0: not cached")
	f.Duration(&c.Accounts.LeaseInterval, "lease-interval", "how often holdings are reported to Accounts")
	f.Duration(&c.MaxDeadline, "max-deadline", "longest any call may run; 0: no cap")
	f.Duration(&c.MaxConnectionAge, "max-connection-age", "connections are closed after this long, so clients re-resolve; 0: never")
	f.Duration(&c.MaxConnectionIdle, "max-connection-idle", "connections with no call in flight this long are closed (the HTTP listener's keep-alive idle timeout too); 0: never")
	f.Int(&c.MaxConns, "max-conns", "connections past their handshake at once; 0: no limit")
	f.Duration(&c.HandshakeTimeout, "handshake-timeout", "how long a new connection has to finish its TLS handshake; 0: gRPC's 120s")
	f.Int(&c.MaxPendingConns, "max-pending-conns", "connections still in their handshake at once; 0: no limit")
	f.Int(&c.MaxConnsPerAddr, "max-conns-per-addr", "connections from one client IP address; 0: no limit")
	f.Uint32(&c.MaxHeaderBytes, "max-header-bytes", "largest header list of a call; 0: gRPC's 16 MB")
	f.Uint32(&c.MaxConcurrentStreams, "max-streams", "calls in flight per connection; 0: no limit")
	f.Duration(&c.DrainDelay, "drain-delay", "how long to report NOT_SERVING before refusing new calls")
	f.Duration(&c.Grace, "grace", "how long shutdown waits for calls in flight")
	f.Float((*float64)(&c.Limits.Rate), "rate", "calls per second for the whole replica; 0: no limit")
	f.Float((*float64)(&c.Limits.TenantRate), "tenant-rate", "calls per second per tenant; 0: no limit")
	f.Float((*float64)(&c.Limits.UnauthRate), "unauth-rate", "calls per second, apart from -rate, of callers without a known token; health is never limited; 0: no limit")
	f.Duration(&c.Auth.Stale, "auth-stale", "how long past -auth-ttl a known token keeps working while Accounts cannot be reached; 0: not at all")
	f.Duration(&c.Auth.NegativeTTL, "auth-negative-ttl", "how long a token Accounts refused is refused without asking again; 0: not cached")
	f.Duration(&c.Accounts.Timeout, "accounts-timeout", "longest wait for Accounts on a caller's behalf, then Unavailable; 0: the caller's deadline")
	f.Duration(&c.Accounts.RetryAfter, "accounts-retry-after", "after Accounts failed to answer, how long before asking again (the RetryInfo delay)")
	f.Duration(&c.Accounts.KeepaliveTime, "accounts-keepalive-time", "after this long without a frame from Accounts, ping it (at least 10s, gRPC's floor; keepalive cannot be off)")
	f.Duration(&c.Accounts.KeepaliveTimeout, "accounts-keepalive-timeout", "an Accounts that does not answer a ping, or acknowledge bytes sent, within this long is dropped: its address is resolved again and reconnected (must be positive)")
	f.String(&c.LogLevel, "log-level", "debug, info, warn or error")
	f.String(&c.HTTP.Addr, "http-addr", "HTTP listener for browsers and REST: gRPC-Web, Connect, REST/JSON and the web console (empty: none)")
	f.Bool(&c.HTTP.Plaintext, "http-plaintext", "serve -http-addr without TLS: loopback development, or behind a proxy that terminates TLS")
	f.String(&c.CORSOrigins, "cors-origins", "comma-separated origins whose pages may call -http-addr, e.g. https://console.example.com (empty: none)")
	f.String(&c.ConsoleReplicas, "console-replicas", "comma-separated HTTP base URLs of every replica, for the web console (empty: this one)")
	f.String(&c.LogFormat, "log-format", "text or json")
	f.Float(&c.MemoryLimitRatio, "memory-limit-ratio", "Go's memory limit as this fraction of the container's memory limit (cgroup), so the GC works harder before the kernel kills; GOMEMLIMIT wins when set; 0: none")
	f.String(&c.AdminAddr, "admin-addr", "admin port: /metrics, /debug/pprof/, and over plaintext h2c gRPC health and channelz; keep it private; empty: none")
	f.String(&c.Peers.Addrs, "peers", "every replica, this one included, as clients dial them (host:port,... or dns:///name:port): calls for keys another replica owns are forwarded to it; empty: no forwarding")
	f.String(&c.Peers.Self, "self", "this replica's address among -peers (empty: found from the listening port)")
	f.Duration(&c.Peers.KeepaliveTime, "peer-keepalive-time", "after this long without a frame from a peer, ping it (at least 10s, gRPC's floor; keepalive cannot be off)")
	f.Duration(&c.Peers.KeepaliveTimeout, "peer-keepalive-timeout", "a peer that does not answer a ping, or acknowledge bytes sent, within this long is dropped and its keys go to the next replica (must be positive)")
	f.Duration(&c.KeepaliveMinTime, "keepalive-min-time", "clients (and peers) may ping this often; more often gets GOAWAY too_many_pings; keep it below every client's keepalive time; 0: no limit")
}

func run(args []string) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("cache-server", flag.ContinueOnError)
	cfg.bind(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.FormatLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	if _, err := cli.MemoryLimit(cfg.MemoryLimitRatio, log, slog.LevelInfo); err != nil {
		return fmt.Errorf("-memory-limit-ratio: %w", err)
	}
	if cfg.HTTP.AllowedOrigins, err = web.ParseOrigins(cfg.CORSOrigins); err != nil {
		return fmt.Errorf("-cors-origins: %w", err)
	}
	if cfg.HTTP.Replicas, err = web.ParseOrigins(cfg.ConsoleReplicas); err != nil {
		return fmt.Errorf("-console-replicas: %w", err)
	}
	if cfg.TLS, err = tlsutil.ServerConfig(cfg.Cert, cfg.Key, ""); err != nil {
		return fmt.Errorf("%w (for development certificates run go run ./final/cmd/devstack once)", err)
	}
	if cfg.Accounts.TLS, err = tlsutil.ClientConfig(cfg.CA, cfg.ClientCert, cfg.ClientKey); err != nil {
		return err
	}
	// The peers' certificates are signed by the same CA; forwarded calls
	// carry the caller's token, so no client certificate is needed.
	if cfg.Peers.TLS, err = tlsutil.ClientConfig(cfg.CA, "", ""); err != nil {
		return err
	}
	cfg.Logger = log
	instance := cfg.ReplicaID
	if instance == "" {
		instance, _ = os.Hostname()
	}
	// Metrics always (read on the admin port); traces when OTEL_* says so.
	if cfg.Telemetry, err = telemetry.New(context.Background(), telemetry.Options{Service: "cache", Instance: instance}); err != nil {
		return err
	}
	srv, err := server.NewCache(cfg.CacheConfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Run(ctx)
}
