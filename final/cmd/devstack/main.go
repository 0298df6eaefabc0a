// Command devstack runs a complete local deployment in one process: the
// Accounts service on :5050 and three cache replicas on :5051-5053, all on
// loopback, with mutual TLS from a development CA it writes to .dev/.
// Ctrl-C drains and stops everything.
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
	"time"

	"golang.org/x/time/rate"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/internal/cli"
	"grpcworkshop.example/final/server"
)

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// config is everything devstack can be told.
type config struct {
	Dir, Accounts, Replicas, AccountsFile, LogLevel string
	HTTP, AccountsAdmin, ReplicasAdmin, LogFormat   string
	Rate, TenantRate                                float64
	// MemoryLimitRatio of the container's memory limit is the Go memory
	// limit (cli.MemoryLimit); GOMEMLIMIT wins; 0: none.
	MemoryLimitRatio float64
}

// defaultConfig is what runs when no flag or variable is given.
func defaultConfig() config {
	c := server.DefaultCacheConfig()
	return config{
		Dir:      ".dev",
		Accounts: "127.0.0.1:5050", Replicas: "127.0.0.1:5051,127.0.0.1:5052,127.0.0.1:5053",
		HTTP:     "127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082",
		LogLevel: "info", LogFormat: "text",
		MemoryLimitRatio: 0.9,
		AccountsAdmin:    "127.0.0.1:9050", ReplicasAdmin: "127.0.0.1:9051,127.0.0.1:9052,127.0.0.1:9053",
		Rate: float64(c.Limits.Rate), TenantRate: float64(c.Limits.TenantRate),
	}
}

// bind is the one place flags and $DEVSTACK_… variables meet the config.
func (c *config) bind(fs *flag.FlagSet) {
	f := cli.New(fs, "DEVSTACK_")
	f.String(&c.Dir, "dir", "directory for the development CA and certificates (created if missing)")
	f.String(&c.Accounts, "accounts", "Accounts address")
	f.String(&c.Replicas, "replicas", "comma-separated cache replica addresses")
	f.String(&c.HTTP, "http", "comma-separated HTTP addresses, one per replica, for browsers and REST (plaintext, loopback); empty: none")
	f.String(&c.AccountsFile, "accounts-file", "accounts JSON (empty: embedded inconshreveable=100 keys, gopher=3 keys)")
	f.String(&c.AccountsAdmin, "accounts-admin", "Accounts' admin port (metrics, pprof, health and channelz over h2c); empty: none")
	f.String(&c.ReplicasAdmin, "replicas-admin", "comma-separated admin ports of the replicas, in the order of -replicas; empty: none")
	f.String(&c.LogLevel, "log-level", "debug, info, warn or error")
	f.String(&c.LogFormat, "log-format", "text or json")
	f.Float(&c.MemoryLimitRatio, "memory-limit-ratio", "Go's memory limit as this fraction of the container's memory limit (cgroup), so the GC works harder before the kernel kills; GOMEMLIMIT wins when set; 0: none")
	f.Float(&c.Rate, "rate", "calls per second for each replica; 0: no limit")
	f.Float(&c.TenantRate, "tenant-rate", "calls per second per tenant on each replica; 0: no limit")
}

func run(args []string) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	cfg.bind(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.FormatLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	if _, err := cli.MemoryLimit(cfg.MemoryLimitRatio, log, slog.LevelDebug); err != nil {
		return fmt.Errorf("-memory-limit-ratio: %w", err)
	}
	accts, err := accounts.Load(cfg.AccountsFile)
	if err != nil {
		return err
	}
	// Say at once that something is happening, and where start-up is.
	fmt.Printf("devstack: starting Accounts and %d cache replicas\n", len(strings.Split(cfg.Replicas, ",")))
	st, err := devstack.Start(devstack.Config{
		Progress:          func(step string) { fmt.Println("devstack:", step) },
		CertDir:           cfg.Dir,
		AccountsAddr:      cfg.Accounts,
		CacheAddrs:        strings.Split(cfg.Replicas, ","),
		WebAddrs:          splitList(cfg.HTTP),
		Logger:            log,
		Directory:         accts,
		Telemetry:         true,
		AccountsAdminAddr: cfg.AccountsAdmin,
		CacheAdminAddrs:   splitList(cfg.ReplicasAdmin),
		TuneCache: func(_ int, c *server.CacheConfig) {
			c.Limits.Rate, c.Limits.TenantRate = rate.Limit(cfg.Rate), rate.Limit(cfg.TenantRate)
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("devstack: ready: accounts on %s, cache replicas on %s, certificates in %s\n", st.AccountsAddr, st.Target(), cfg.Dir)
	if len(st.WebURLs) > 0 {
		fmt.Printf("console:  %s/ (token inconshreveable; REST, Connect and gRPC-Web on %s)\n", st.WebURLs[0], strings.Join(st.WebURLs, ","))
	}
	if admins := st.Admins(); admins != "" {
		fmt.Printf("admin:    %s (/metrics, /debug/pprof/, gRPC health and channelz over h2c)\n", admins)
	}
	fmt.Printf("try:      bin/cachectl store gopher con && bin/cachectl get gopher   (after go build -o bin/ ./cmd/...)\n")
	fmt.Printf("stop:     Ctrl-C\n")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-st.Errs():
		st.Stop()
		return fmt.Errorf("a server stopped: %w", err)
	}
	fmt.Println("devstack: draining")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return st.Shutdown(sctx)
}

// splitList splits a comma-separated flag value; "" is an empty list.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return strings.Split(s, ",")
}
