package main

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// The two tests below run the cache server (runServer, as the server
// command does) against a stand-in Accounts service that never answers: it
// reports the deadline each call reaches it with, then waits until its
// caller gives up or the test ends.

// The talk's §6: the cache server caps its wait for Accounts.
func TestAccountsIsAskedWithADeadlineWhenTheCallerSetsNone(t *testing.T) {
	certs := devCerts(t)
	seen := make(chan time.Time, 10) // the zero Time: no deadline
	testOver := make(chan struct{})
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		deadline, _ := stream.Context().Deadline()
		seen <- deadline
		select {
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-testOver:
			return status.Error(codes.Unavailable, "test over")
		}
	}))
	accountsAddr := serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return serve(ctx, srv, lis) })
	sys := startCacheWith(t, certs, testServerConfig(t, certs, accountsAddr))
	t.Cleanup(func() { close(testOver) }) // before the servers stop

	// A caller that sends no deadline, cancelled once Accounts has been asked.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- store(ctx, sys.cache, testToken, "k", "v") }()

	var deadline time.Time
	select {
	case deadline = <-seen:
	case <-testContext(t).Done():
		require.FailNow(t, "Accounts was never asked")
	}
	assert.False(t, deadline.IsZero(), "the cache server asked Accounts with no deadline: a slow Accounts holds the call for ever")
	cancel()
	<-done
}

// The talk's §7: the caller's own deadline reaches Accounts.
func TestAccountsIsAskedWithinTheCallersDeadline(t *testing.T) {
	certs := devCerts(t)
	seen := make(chan time.Time, 10) // the zero Time: no deadline
	testOver := make(chan struct{})
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		deadline, _ := stream.Context().Deadline()
		seen <- deadline
		select {
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-testOver:
			return status.Error(codes.Unavailable, "test over")
		}
	}))
	accountsAddr := serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return serve(ctx, srv, lis) })
	sys := startCacheWith(t, certs, testServerConfig(t, certs, accountsAddr))
	t.Cleanup(func() { close(testOver) }) // before the servers stop

	// The caller needs an answer within a second, sooner than the
	// server's default cap (2 s): a fixed cap alone would let Accounts
	// work on for a second after the caller has given up.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()
	done := make(chan error, 1)
	go func() { done <- store(ctx, sys.cache, testToken, "k", "v") }()

	var deadline time.Time
	select {
	case deadline = <-seen:
	case <-testContext(t).Done():
		require.FailNow(t, "Accounts was never asked")
	}
	require.False(t, deadline.IsZero(), "the cache server asked Accounts with no deadline")
	// Each hop adds its transit time (microseconds on loopback) to the deadline it passes on.
	assert.WithinDuration(t, callerDeadline, deadline, 500*time.Millisecond,
		"Accounts was asked with a deadline of its own, not the caller's")
	cancel()
	<-done
}
