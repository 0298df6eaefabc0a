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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"grpcworkshop/final/accounts"
	"grpcworkshop/final/devstack"
	"grpcworkshop/final/internal/cli"
	"grpcworkshop/final/server"
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

func run(args []string) error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	dir := cli.String(fs, "dir", "DEV_DIR", ".dev", "directory for the development CA and certificates (created if missing)")
	accountsAddr := cli.String(fs, "accounts", "ACCOUNTS_LISTEN", "127.0.0.1:5050", "Accounts address")
	replicas := cli.String(fs, "replicas", "CACHE_REPLICAS", "127.0.0.1:5051,127.0.0.1:5052,127.0.0.1:5053", "comma-separated cache replica addresses")
	file := cli.String(fs, "accounts-file", "ACCOUNTS_FILE", "", "accounts JSON (default: embedded inconshreveable=100 keys, gopher=3 keys)")
	level := cli.String(fs, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	rps := cli.Float(fs, "rate", "RATE", 5000, "calls per second for each replica; 0 for no limit")
	tenantRPS := cli.Float(fs, "tenant-rate", "TENANT_RATE", 1000, "calls per second per tenant on each replica; 0 for no limit")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(*level)
	if err != nil {
		return err
	}
	accts, err := accounts.Load(*file)
	if err != nil {
		return err
	}
	// Say at once that something is happening, and where start-up is.
	fmt.Printf("devstack: starting Accounts and %d cache replicas\n", len(strings.Split(*replicas, ",")))
	st, err := devstack.Start(devstack.Config{
		Progress:     func(step string) { fmt.Println("devstack:", step) },
		CertDir:      *dir,
		AccountsAddr: *accountsAddr,
		CacheAddrs:   strings.Split(*replicas, ","),
		Logger:       log,
		Directory:    accts,
		TuneCache: func(_ int, c *server.CacheConfig) {
			c.Rate, c.Burst = cli.Limit(*rps, 0.1)
			c.TenantRate, c.TenantBurst = cli.Limit(*tenantRPS, 0.2)
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("devstack: ready: accounts on %s, cache replicas on %s, certificates in %s\n", st.AccountsAddr, st.Target(), *dir)
	fmt.Printf("try:      bin/cachectl store gopher con && bin/cachectl get gopher   (after go build -o bin/ ./final/cmd/...)\n")
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
