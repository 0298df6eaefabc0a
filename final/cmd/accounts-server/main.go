// Command accounts-server runs the Accounts service: it resolves tokens to
// accounts and counts every tenant's keys across all cache replicas. It
// requires client certificates (mutual TLS): only replicas call it.
// SIGHUP reloads the accounts file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/internal/cli"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/telemetry"
	"grpcworkshop.example/final/tlsutil"
)

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "accounts-server:", err)
		os.Exit(1)
	}
}

// config is everything accounts-server can be told.
type config struct {
	server.AccountsConfig
	AccountsFile, Cert, Key, CA, LogLevel, LogFormat string
	// Etcd: host:port,... of etcd's members (empty: the ledger is -ledger
	// or memory); EtcdCA, EtcdCert, EtcdKey: TLS to them (empty: plaintext).
	Etcd, EtcdCA, EtcdCert, EtcdKey string
	// MemoryLimitRatio of the container's memory limit is the Go memory
	// limit (cli.MemoryLimit); GOMEMLIMIT wins; 0: none.
	MemoryLimitRatio float64
}

// defaultConfig is what runs when no flag or variable is given.
func defaultConfig() config {
	acfg := server.DefaultAccountsConfig()
	// A process started by hand may be a restart: without -ledger it
	// waits for the replicas to re-register before granting slots.
	acfg.RecoveryGrace = acfg.LeaseTTL
	return config{
		AccountsConfig: acfg,
		Cert:           ".dev/server.crt", Key: ".dev/server.key", CA: ".dev/ca.crt",
		LogLevel: "info", LogFormat: "text",
		MemoryLimitRatio: 0.9,
	}
}

// bind is the one place flags and $ACCOUNTS_… variables meet the config.
func (c *config) bind(fs *flag.FlagSet) {
	f := cli.New(fs, "ACCOUNTS_")
	f.String(&c.Addr, "addr", "address to listen on")
	f.String(&c.AccountsFile, "accounts", `JSON accounts {"TOKEN": {"tenant": "NAME", "max_cache_keys": N, "max_cache_bytes": B}} (max_cache_bytes optional, 0: no byte cap; empty: embedded)`)
	f.String(&c.Cert, "cert", "server certificate")
	f.String(&c.Key, "key", "server key")
	f.String(&c.CA, "ca", "CA that signs the replicas' client certificates")
	f.Duration(&c.LeaseTTL, "lease-ttl", "how long a silent replica's key slots stay reserved")
	f.String(&c.LedgerPath, "ledger", "quota ledger file (bbolt), kept across restarts; empty: in memory")
	f.String(&c.Etcd, "ledger-etcd", "etcd members host:port,... that hold the quota ledger, shared by every Accounts process pointed at them (replaces -ledger); empty: -ledger")
	f.String(&c.LedgerEtcd.Prefix, "ledger-etcd-prefix", "prefix of the ledger's keys in etcd")
	f.String(&c.EtcdCA, "ledger-etcd-ca", "CA of etcd's server certificates; with it the connection to etcd is TLS")
	f.String(&c.EtcdCert, "ledger-etcd-cert", "client certificate presented to etcd (with -ledger-etcd-ca)")
	f.String(&c.EtcdKey, "ledger-etcd-key", "key of -ledger-etcd-cert")
	f.Duration(&c.RecoveryGrace, "recovery-grace", "with the ledger in memory, how long after starting no key slot is granted while replicas re-register (at least -lease-ttl after a restart); 0: none")
	f.Duration(&c.MaxDeadline, "max-deadline", "longest any call may run; 0: no cap")
	f.Duration(&c.HandshakeTimeout, "handshake-timeout", "how long a new connection has to finish its TLS handshake; 0: gRPC's 120s")
	f.Int(&c.MaxPendingConns, "max-pending-conns", "connections still in their handshake at once; 0: no limit")
	f.Int(&c.MaxConnsPerAddr, "max-conns-per-addr", "connections from one client IP address; 0: no limit")
	f.Uint32(&c.MaxHeaderBytes, "max-header-bytes", "largest header list of a call; 0: gRPC's 16 MB")
	f.Duration(&c.KeepaliveMinTime, "keepalive-min-time", "clients may ping this often; more often gets GOAWAY too_many_pings; 0: no limit")
	f.Duration(&c.Grace, "grace", "how long shutdown waits for calls in flight")
	f.String(&c.LogLevel, "log-level", "debug, info, warn or error")
	f.String(&c.LogFormat, "log-format", "text or json")
	f.Float(&c.MemoryLimitRatio, "memory-limit-ratio", "Go's memory limit as this fraction of the container's memory limit (cgroup), so the GC works harder before the kernel kills; GOMEMLIMIT wins when set; 0: none")
	f.String(&c.AdminAddr, "admin-addr", "admin port: /metrics, /debug/pprof/, and over plaintext h2c gRPC health and channelz; keep it private; empty: none")
}

func run(args []string) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("accounts-server", flag.ContinueOnError)
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
	if cfg.Directory, err = accounts.Load(cfg.AccountsFile); err != nil {
		return err
	}
	if cfg.TLS, err = tlsutil.ServerConfig(cfg.Cert, cfg.Key, cfg.CA); err != nil {
		return fmt.Errorf("%w (for development certificates run go run ./final/cmd/devstack once)", err)
	}
	if cfg.Etcd != "" {
		cfg.LedgerEtcd.Endpoints = strings.Split(cfg.Etcd, ",")
		cfg.RecoveryGrace = 0 // the ledger outlives this process
		if cfg.EtcdCA != "" {
			if cfg.LedgerEtcd.TLS, err = tlsutil.ClientConfig(cfg.EtcdCA, cfg.EtcdCert, cfg.EtcdKey); err != nil {
				return fmt.Errorf("etcd tls: %w", err)
			}
		}
	}
	cfg.Logger = log
	// Metrics always (read on the admin port); traces when OTEL_* says so.
	if cfg.Telemetry, err = telemetry.New(context.Background(), telemetry.Options{Service: "accounts", Instance: "accounts"}); err != nil {
		return err
	}
	srv, err := server.NewAccounts(cfg.AccountsConfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go reloadOnHUP(ctx, srv, cfg.AccountsFile, log)
	log.Info("accounts", "tokens", cfg.Directory.Len())
	switch {
	case cfg.Etcd != "":
		log.Info("quota ledger in etcd", "endpoints", cfg.Etcd, "prefix", cfg.LedgerEtcd.Prefix)
	case cfg.LedgerPath != "":
		log.Info("quota ledger on disk", "file", cfg.LedgerPath, "leases", srv.Service().Ledger().Leases())
	case cfg.RecoveryGrace > 0:
		log.Warn("quota ledger in memory: no key slots granted while replicas re-register (-ledger keeps it across restarts)", "for", cfg.RecoveryGrace)
	}
	return srv.Run(ctx)
}

// reloadOnHUP replaces the accounts from file on every SIGHUP until ctx ends.
func reloadOnHUP(ctx context.Context, srv *server.AccountsServer, file string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		d, err := accounts.Load(file)
		if err != nil {
			log.Error("reload accounts", "error", err)
			continue
		}
		srv.Service().SetDirectory(d)
		log.Info("reloaded accounts", "tokens", d.Len())
	}
}
