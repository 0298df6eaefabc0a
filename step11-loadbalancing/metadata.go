package main

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// dryRunHeader is the metadata key that asks for a dry run: "1" or "true"
// for a dry run; "0", "false" or no header for a real call. Anything else is
// refused.
const dryRunHeader = "dry-run"

type dryRunKey struct{}

// dryRunUnaryServer reads the dry-run header once for every call, so that
// handlers ask isDryRun instead of parsing metadata, and a value nobody
// understands is refused before a handler can take it for a real write.
func dryRunUnaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	dryRun, err := parseDryRun(metadata.ValueFromIncomingContext(ctx, dryRunHeader))
	if err != nil {
		return nil, err
	}
	return handler(context.WithValue(ctx, dryRunKey{}, dryRun), req)
}

// dryRunStreamServer refuses a dry-run header it does not understand on
// streams too. Dump changes nothing, so a valid one needs nothing more.
func dryRunStreamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, err := parseDryRun(metadata.ValueFromIncomingContext(ss.Context(), dryRunHeader)); err != nil {
		return err
	}
	return handler(srv, ss)
}

func parseDryRun(vals []string) (bool, error) {
	if len(vals) == 0 {
		return false, nil
	}
	if len(vals) == 1 {
		switch vals[0] {
		case "1", "true":
			return true, nil
		case "0", "false":
			return false, nil
		}
	}
	return false, fmt.Errorf("%w, got %q", errBadDryRun, vals)
}

// isDryRun reports whether the call asked to change nothing.
func isDryRun(ctx context.Context) bool {
	dryRun, _ := ctx.Value(dryRunKey{}).(bool)
	return dryRun
}

// withDryRun asks the server for a dry run of every call made with ctx.
func withDryRun(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, dryRunHeader, "1")
}
