package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// clientConfig is what the client command's flags set. Tests build one and
// call dial or runClient, so they connect exactly as a person does.
type clientConfig struct {
	addr   string // one address, or several replicas' separated by commas
	lb     string // how calls are spread over the replicas
	caFile string
	token  string
	cmd    []string // what to do: nothing (the talk's demo), store, get, fill, dump-all or dump
	logger *slog.Logger

	storeTimeout, getTimeout time.Duration // each call's deadline
	dryRun                   bool          // check every Store, change nothing
	attempts                 int           // per call, the first included
	dumpTimeout              time.Duration // deadline of a whole dump
}

func parseClientFlags(args []string) (clientConfig, error) {
	cfg := clientConfig{logger: newLogger()}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "localhost:5051", "cache server address, or the addresses of several replicas separated by commas")
	fs.StringVar(&cfg.lb, "lb", "ring_hash", "how calls are spread over the replicas: ring_hash (each key on one replica) or round_robin")
	fs.StringVar(&cfg.caFile, "ca", "certs/ca.crt", "CA certificate that signed the server's certificate")
	fs.StringVar(&cfg.token, "token", "inconshreveable", "account token")
	fs.DurationVar(&cfg.storeTimeout, "store-timeout", time.Second, "deadline of each Store")
	fs.DurationVar(&cfg.getTimeout, "get-timeout", 500*time.Millisecond, "deadline of each Get")
	fs.DurationVar(&cfg.dumpTimeout, "dump-timeout", time.Minute, "deadline of a whole dump")
	fs.BoolVar(&cfg.dryRun, "dry-run", false, "check a store as the server would, but change nothing")
	fs.IntVar(&cfg.attempts, "attempts", defaultAttempts, "attempts per call, the first included (1: no retries)")
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
	return dialReplicas(strings.Split(cfg.addr, ","), cfg.lb, grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(logUnaryClient(cfg.logger), retryUnary(cfg.attempts, retryBase, retryMax), keyAffinityUnary),
		grpc.WithChainStreamInterceptor(logStreamClient(cfg.logger)))
}

// runClient runs cfg.cmd against the cache server and prints the result to out.
func runClient(ctx context.Context, cfg clientConfig, out io.Writer) error {
	conn, err := dial(cfg)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	cache := rpc.NewCacheClient(conn)
	if cfg.dryRun {
		ctx = withDryRun(ctx)
	}
	// Every call has its own deadline, which the server passes on to
	// Accounts: once the caller gives up, nobody keeps working for it.
	// Each answer's header names the replica that gave it.
	var header metadata.MD
	store := func(key, val string) error {
		ctx, cancel := context.WithTimeout(ctx, cfg.storeTimeout)
		defer cancel()
		header = nil
		_, err := cache.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte(val), AccountToken: cfg.token}, grpc.Header(&header))
		return withReplica(withDetail(err), header)
	}
	get := func(key string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.getTimeout)
		defer cancel()
		header = nil
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: key, AccountToken: cfg.token}, grpc.Header(&header))
		return resp.GetVal(), withReplica(withDetail(err), header)
	}

	cmd := cfg.cmd
	switch {
	case len(cmd) == 0: // the talk's demo
		if err := store("gopher", "con"); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if cfg.dryRun {
			fmt.Fprintln(out, "Dry run: would store gopher")
			return nil
		}
		val, err := get("gopher")
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		fmt.Fprintf(out, "Got cached value %s (replica %s)\n", val, replicaOf(header))
	case cmd[0] == "store" && len(cmd) == 3:
		if err := store(cmd[1], cmd[2]); err != nil {
			return fmt.Errorf("store %q: %w", cmd[1], err)
		}
		if cfg.dryRun {
			fmt.Fprintf(out, "Dry run: would store %s\n", cmd[1])
			return nil
		}
		fmt.Fprintf(out, "Stored %s (replica %s)\n", cmd[1], replicaOf(header))
	case cmd[0] == "get" && len(cmd) == 2:
		val, err := get(cmd[1])
		if err != nil {
			return fmt.Errorf("get %q: %w", cmd[1], err)
		}
		fmt.Fprintf(out, "Got cached value %s (replica %s)\n", val, replicaOf(header))
	case cmd[0] == "fill" && len(cmd) == 3:
		n, err1 := strconv.Atoi(cmd[1])
		size, err2 := strconv.Atoi(cmd[2])
		if err := errors.Join(err1, err2); err != nil || n < 0 || size < 0 {
			return fmt.Errorf("fill COUNT BYTES: want two numbers >= 0, got %q", cmd[1:])
		}
		val := strings.Repeat("x", size)
		for i := range n {
			if err := store(fmt.Sprintf("fill-%d", i), val); err != nil {
				return fmt.Errorf("store fill-%d: %w", i, err)
			}
		}
		fmt.Fprintf(out, "Stored %d keys of %d bytes\n", n, size)
	case cmd[0] == "dump-all" && len(cmd) == 1:
		ctx, cancel := context.WithTimeout(ctx, cfg.dumpTimeout)
		defer cancel()
		// One message with every item: the server builds it whole, and the
		// client receives it whole, or not at all past its 4 MB limit.
		resp, err := cache.DumpAll(ctx, &rpc.DumpReq{AccountToken: cfg.token})
		if err != nil {
			return fmt.Errorf("dump-all: %w", withDetail(err))
		}
		for _, item := range resp.Items {
			printItem(out, item)
		}
	case cmd[0] == "dump" && len(cmd) == 1:
		ctx, cancel := context.WithTimeout(ctx, cfg.dumpTimeout)
		defer cancel()
		stream, err := cache.Dump(ctx, &rpc.DumpReq{AccountToken: cfg.token})
		if err != nil {
			return fmt.Errorf("dump: %w", withDetail(err))
		}
		// Each item is printed as it arrives: nothing waits for the whole dump.
		for {
			item, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("dump: %w", withDetail(err))
			}
			printItem(out, item)
		}
	default:
		return fmt.Errorf("unknown client command %q\n%s", cmd, usage)
	}
	return nil
}

// printItem prints key=value, or key and the value's size when it is too
// long to read.
func printItem(out io.Writer, item *rpc.DumpItem) {
	if len(item.Val) > 64 {
		fmt.Fprintf(out, "%s=(%d bytes)\n", item.Key, len(item.Val))
		return
	}
	fmt.Fprintf(out, "%s=%s\n", item.Key, item.Val)
}

// withDetail adds what the server's Error detail says to err's text.
func withDetail(err error) error {
	if e, ok := rpc.FromError(err); ok {
		return fmt.Errorf("%w (temporary: %t, user error code: %d)", err, e.GetTemporary(), e.GetUserErrorCode())
	}
	return err
}

// withReplica adds the replica that answered to err's text.
func withReplica(err error, header metadata.MD) error {
	if err != nil && replicaOf(header) != "" {
		return fmt.Errorf("%w (replica %s)", err, replicaOf(header))
	}
	return err
}
