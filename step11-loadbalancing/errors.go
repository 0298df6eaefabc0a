package main

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/step11-loadbalancing/rpc"
)

// What can go wrong in the cache, as plain Go errors: handlers wrap them
// with the particulars and never pick a gRPC code themselves.
var (
	errEmptyKey        = errors.New("key must not be empty")
	errNotFound        = errors.New("not found")
	errOverQuota       = errors.New("account exceeds max key limit")
	errMissingToken    = errors.New("missing account token")
	errUnknownToken    = errors.New("unknown account token")
	errAccountsDown    = errors.New("accounts service")
	errAccountsTimeout = errors.New("accounts service did not answer in time")
	errCanceled        = errors.New("call canceled")
	errOverRate        = errors.New("service is over rate limit")
	errBadDryRun       = fmt.Errorf(`%s must be one of "1", "true", "0" or "false"`, dryRunHeader)
)

// toRPCError is the one place where the cache's errors become what its
// clients see: a gRPC code, the message, and whether trying again may help.
// Only a failing dependency is temporary; the caller's own mistakes and
// the state of its account stay the same however often it asks.
func toRPCError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, errEmptyKey), errors.Is(err, errBadDryRun):
		return userError(codes.InvalidArgument, rpc.UserErrorInvalidArgument, msg)
	case errors.Is(err, errNotFound):
		return userError(codes.NotFound, rpc.UserErrorKeyNotFound, msg)
	case errors.Is(err, errOverQuota):
		return userError(codes.FailedPrecondition, rpc.UserErrorOverQuota, msg)
	case errors.Is(err, errMissingToken), errors.Is(err, errUnknownToken):
		return userError(codes.Unauthenticated, rpc.UserErrorUnknownToken, msg)
	case errors.Is(err, errAccountsDown):
		return rpc.Errorf(codes.Unavailable, true, "%s", msg)
	case errors.Is(err, errAccountsTimeout):
		// Slow, not wrong: a retry with time left may get through.
		return rpc.Errorf(codes.DeadlineExceeded, true, "%s", msg)
	case errors.Is(err, errOverRate):
		// Refused before any work was done: the same call later may pass.
		return rpc.Errorf(codes.ResourceExhausted, true, "%s", msg)
	case errors.Is(err, errCanceled), errors.Is(err, context.Canceled):
		return rpc.Errorf(codes.Canceled, false, "%s", errCanceled)
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status, from gRPC itself
	}
	return rpc.Errorf(codes.Internal, false, "%s", msg)
}

func userError(code codes.Code, userCode int64, msg string) *rpc.Error {
	e := rpc.Errorf(code, false, "%s", msg)
	e.UserErrorCode = userCode
	return e
}

// errorsUnaryServer applies toRPCError to every error a handler returns.
func errorsUnaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		return nil, toRPCError(err)
	}
	return resp, nil
}

// errorsStreamServer applies toRPCError to every error a stream handler returns.
func errorsStreamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := handler(srv, ss); err != nil {
		return toRPCError(err)
	}
	return nil
}
