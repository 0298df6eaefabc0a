// Command accounts-server runs the Accounts service: it resolves tokens to
// accounts and counts every tenant's keys across all cache replicas. It
// requires client certificates (mutual TLS): only replicas call it.
// SIGHUP reloads the accounts file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"grpcworkshop/final/accounts"
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
		fmt.Fprintln(os.Stderr, "accounts-server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("accounts-server", flag.ContinueOnError)
	addr := cli.String(fs, "addr", "ACCOUNTS_LISTEN", "localhost:5050", "address to listen on")
	file := cli.String(fs, "accounts", "ACCOUNTS_FILE", "", `JSON accounts {"TOKEN": {"tenant": "NAME", "max_cache_keys": N}} (default: embedded)`)
	cert := cli.String(fs, "cert", "TLS_CERT", ".dev/server.crt", "server certificate")
	key := cli.String(fs, "key", "TLS_KEY", ".dev/server.key", "server key")
	ca := cli.String(fs, "ca", "TLS_CA", ".dev/ca.crt", "CA that signs the replicas' client certificates")
	leaseTTL := cli.Duration(fs, "lease-ttl", "LEASE_TTL", 15*time.Second, "how long a silent replica's key slots stay reserved")
	grace := cli.Duration(fs, "grace", "SHUTDOWN_GRACE", 10*time.Second, "how long shutdown waits for calls in flight")
	level := cli.String(fs, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log, err := cli.Logger(*level)
	if err != nil {
		return err
	}
	dir, err := accounts.Load(*file)
	if err != nil {
		return err
	}
	tlsCfg, err := tlsutil.ServerConfig(*cert, *key, *ca)
	if err != nil {
		return fmt.Errorf("%w (for development certificates run go run ./final/cmd/devstack once)", err)
	}
	srv, err := server.NewAccounts(server.AccountsConfig{
		Common:    server.Common{TLS: tlsCfg, Logger: log},
		Directory: dir,
		LeaseTTL:  *leaseTTL,
	})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			d, err := accounts.Load(*file)
			if err != nil {
				log.Error("reload accounts", "error", err)
				continue
			}
			srv.Service().SetDirectory(d)
			log.Info("reloaded accounts", "tokens", d.Len())
		}
	}()
	log.Info("accounts", "tokens", dir.Len())
	return cli.Serve(srv.Server, *addr, *grace, log)
}
