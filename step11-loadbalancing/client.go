package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"grpcworkshop/step11-loadbalancing/rpc"
)

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addrs := fs.String("addr", "localhost:5051", "cache server address, or the addresses of several replicas separated by commas")
	policy := fs.String("lb", "ring_hash", "how calls are spread over the replicas: ring_hash (each key on one replica) or round_robin")
	caFile := fs.String("ca", "certs/ca.crt", "CA certificate that signed the server's certificate")
	token := fs.String("token", "inconshreveable", "account token")
	storeTimeout := fs.Duration("store-timeout", time.Second, "deadline of each Store")
	getTimeout := fs.Duration("get-timeout", 500*time.Millisecond, "deadline of each Get")
	dumpTimeout := fs.Duration("dump-timeout", time.Minute, "deadline of a whole Dump")
	dryRun := fs.Bool("dry-run", false, "check a store as the server would, but change nothing")
	attempts := fs.Int("attempts", defaultAttempts, "attempts per call, the first included (1: no retries)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// The server's certificate is verified against the CA (the talk skipped
	// verification with InsecureSkipVerify, which lets anyone impersonate it).
	creds, err := credentials.NewClientTLSFromFile(*caFile, "")
	if err != nil {
		return fmt.Errorf("load CA certificate: %w", err)
	}
	logger := newLogger()
	conn, err := dialReplicas(strings.Split(*addrs, ","), *policy, grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(logUnaryClient(logger), retryUnary(*attempts, retryBase, retryMax), keyAffinityUnary),
		grpc.WithChainStreamInterceptor(logStreamClient(logger), retryStream(*attempts, retryBase, retryMax)))
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	cache := rpc.NewCacheClient(conn)
	ctx := context.Background()
	if *dryRun {
		ctx = withDryRun(ctx)
	}
	// Every call has its own deadline, which the server passes on to
	// Accounts: once the caller gives up, nobody keeps working for it.
	// Each answer's header names the replica that gave it.
	var header metadata.MD
	store := func(key, val string) error {
		ctx, cancel := context.WithTimeout(ctx, *storeTimeout)
		defer cancel()
		header = nil
		_, err := cache.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte(val), AccountToken: *token}, grpc.Header(&header))
		return withReplica(withDetail(err), header)
	}
	get := func(key string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, *getTimeout)
		defer cancel()
		header = nil
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: key, AccountToken: *token}, grpc.Header(&header))
		return resp.GetVal(), withReplica(withDetail(err), header)
	}

	cmd := fs.Args()
	switch {
	case len(cmd) == 0: // the talk's demo
		if err := store("gopher", "con"); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if *dryRun {
			fmt.Println("Dry run: would store gopher")
			return nil
		}
		val, err := get("gopher")
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		fmt.Printf("Got cached value %s (replica %s)\n", val, replicaOf(header))
	case cmd[0] == "store" && len(cmd) == 3:
		if err := store(cmd[1], cmd[2]); err != nil {
			return fmt.Errorf("store %q: %w", cmd[1], err)
		}
		if *dryRun {
			fmt.Printf("Dry run: would store %s\n", cmd[1])
			return nil
		}
		fmt.Printf("Stored %s (replica %s)\n", cmd[1], replicaOf(header))
	case cmd[0] == "get" && len(cmd) == 2:
		val, err := get(cmd[1])
		if err != nil {
			return fmt.Errorf("get %q: %w", cmd[1], err)
		}
		fmt.Printf("Got cached value %s (replica %s)\n", val, replicaOf(header))
	case cmd[0] == "dump" && len(cmd) == 1:
		ctx, cancel := context.WithTimeout(ctx, *dumpTimeout)
		defer cancel()
		stream, err := cache.Dump(ctx, &rpc.DumpReq{AccountToken: *token})
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
			fmt.Printf("%s=%s\n", item.Key, item.Val)
		}
	default:
		return fmt.Errorf("unknown client command %q\n%s", cmd, usage)
	}
	return nil
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
