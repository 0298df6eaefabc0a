package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"grpcworkshop/step06-deadlines/rpc"
)

// clientConfig is what the client command's flags set. Tests build one and
// call dial or runClient, so they connect exactly as a person does.
type clientConfig struct {
	addr   string
	caFile string
	token  string
	cmd    []string // what to do: nothing (the talk's demo), store KEY VALUE, get KEY
	logger *slog.Logger

	storeTimeout, getTimeout time.Duration // each call's deadline
}

func parseClientFlags(args []string) (clientConfig, error) {
	cfg := clientConfig{logger: newLogger()}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "localhost:5051", "cache server address")
	fs.StringVar(&cfg.caFile, "ca", "certs/ca.crt", "CA certificate that signed the server's certificate")
	fs.StringVar(&cfg.token, "token", "inconshreveable", "account token")
	fs.DurationVar(&cfg.storeTimeout, "store-timeout", time.Second, "deadline of each Store")
	fs.DurationVar(&cfg.getTimeout, "get-timeout", 500*time.Millisecond, "deadline of each Get")
	err := fs.Parse(args)
	cfg.cmd = fs.Args()
	return cfg, err
}

// clientMain is the client command: flags, then runClient.
func clientMain(ctx context.Context, args []string) error {
	cfg, err := parseClientFlags(args)
	if err != nil {
		return err
	}
	return runClient(ctx, cfg, os.Stdout)
}

// dial connects to the cache server as cfg says.
func dial(cfg clientConfig) (*grpc.ClientConn, error) {
	// The server's certificate is verified against the CA (the talk skipped
	// verification with InsecureSkipVerify, which lets anyone impersonate it).
	creds, err := credentials.NewClientTLSFromFile(cfg.caFile, "")
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	return grpc.NewClient(cfg.addr, grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(logUnaryClient(cfg.logger)))
}

// runClient runs cfg.cmd against the cache server and prints the result to out.
func runClient(ctx context.Context, cfg clientConfig, out io.Writer) error {
	conn, err := dial(cfg)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	cache := rpc.NewCacheClient(conn)
	// Every call has its own deadline, which the server passes on to
	// Accounts: once the caller gives up, nobody keeps working for it.
	store := func(key, val string) error {
		ctx, cancel := context.WithTimeout(ctx, cfg.storeTimeout)
		defer cancel()
		_, err := cache.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte(val), AccountToken: cfg.token})
		return err
	}
	get := func(key string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.getTimeout)
		defer cancel()
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: key, AccountToken: cfg.token})
		return resp.GetVal(), err
	}

	cmd := cfg.cmd
	switch {
	case len(cmd) == 0: // the talk's demo
		if err := store("gopher", "con"); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		val, err := get("gopher")
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		fmt.Fprintf(out, "Got cached value %s\n", val)
	case cmd[0] == "store" && len(cmd) == 3:
		if err := store(cmd[1], cmd[2]); err != nil {
			return fmt.Errorf("store %q: %w", cmd[1], err)
		}
		fmt.Fprintf(out, "Stored %s\n", cmd[1])
	case cmd[0] == "get" && len(cmd) == 2:
		val, err := get(cmd[1])
		if err != nil {
			return fmt.Errorf("get %q: %w", cmd[1], err)
		}
		fmt.Fprintf(out, "Got cached value %s\n", val)
	default:
		return fmt.Errorf("unknown client command %q\n%s", cmd, usage)
	}
	return nil
}
