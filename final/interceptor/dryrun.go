package interceptor

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop/final/apierr"
	"grpcworkshop/final/auth"
)

// DryRunHeader is the metadata that asks the server to do everything but
// change state. Metadata rather than a field: it applies to every method.
const DryRunHeader = "dry-run"

// WithDryRun marks an outgoing call as a dry run.
func WithDryRun(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, DryRunHeader, "1")
}

// DryRun reads the dry-run metadata: absent or "0" is false, "1" is true,
// anything else is InvalidArgument (metadata is untyped, so it is checked).
func DryRun(ctx context.Context) (bool, error) {
	vals := metadata.ValueFromIncomingContext(ctx, DryRunHeader)
	if len(vals) == 0 {
		return false, nil
	}
	if len(vals) == 1 {
		switch vals[0] {
		case "1":
			return true, nil
		case "0":
			return false, nil
		}
	}
	return false, apierr.InvalidArgument(DryRunHeader, `metadata %q must be "1" or "0", got %q`, DryRunHeader, vals)
}

type dryRunKey struct{}

// IsDryRun reports whether the DryRunUnary interceptor marked ctx a dry run.
func IsDryRun(ctx context.Context) bool {
	v, _ := ctx.Value(dryRunKey{}).(bool)
	return v
}

func withDryRun(ctx context.Context) (context.Context, error) {
	dry, err := DryRun(ctx)
	if err != nil || !dry {
		return ctx, err
	}
	return context.WithValue(ctx, dryRunKey{}, true), nil
}

// DryRunUnary reads the dry-run metadata once per call, in one place,
// refusing bad values before the handler runs.
func DryRunUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := withDryRun(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// DryRunStream does the same for streams: a bad value is refused on every
// method, even one (like Dump) that changes nothing.
func DryRunStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := withDryRun(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &auth.ContextStream{ServerStream: ss, Ctx: ctx})
	}
}
