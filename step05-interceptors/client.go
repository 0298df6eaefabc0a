package main

import (
	"context"
	"flag"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"grpcworkshop/step05-interceptors/rpc"
)

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "localhost:5051", "cache server address")
	caFile := fs.String("ca", "certs/ca.crt", "CA certificate that signed the server's certificate")
	token := fs.String("token", "inconshreveable", "account token")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// The server's certificate is verified against the CA (the talk skipped
	// verification with InsecureSkipVerify, which lets anyone impersonate it).
	creds, err := credentials.NewClientTLSFromFile(*caFile, "")
	if err != nil {
		return fmt.Errorf("load CA certificate: %w", err)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(logUnaryClient(newLogger())))
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	cache := rpc.NewCacheClient(conn)
	ctx := context.Background()

	cmd := fs.Args()
	switch {
	case len(cmd) == 0: // the talk's demo
		if _, err := cache.Store(ctx, &rpc.StoreReq{Key: "gopher", Val: []byte("con"), AccountToken: *token}); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: "gopher", AccountToken: *token})
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		fmt.Printf("Got cached value %s\n", resp.Val)
	case cmd[0] == "store" && len(cmd) == 3:
		if _, err := cache.Store(ctx, &rpc.StoreReq{Key: cmd[1], Val: []byte(cmd[2]), AccountToken: *token}); err != nil {
			return fmt.Errorf("store %q: %w", cmd[1], err)
		}
		fmt.Printf("Stored %s\n", cmd[1])
	case cmd[0] == "get" && len(cmd) == 2:
		resp, err := cache.Get(ctx, &rpc.GetReq{Key: cmd[1], AccountToken: *token})
		if err != nil {
			return fmt.Errorf("get %q: %w", cmd[1], err)
		}
		fmt.Printf("Got cached value %s\n", resp.Val)
	default:
		return fmt.Errorf("unknown client command %q\n%s", cmd, usage)
	}
	return nil
}
