package main

import (
	"context"
	"fmt"
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

	"grpcworkshop/step09-structured-errors/rpc"
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
	// A call to Accounts as the stand-in saw it: the token asked about,
	// the deadline (the zero Time: none), and when the handler ran.
	type asked struct {
		token        string
		deadline, at time.Time
	}
	seen := make(chan asked, 100)
	testOver := make(chan struct{})
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		at := time.Now()
		deadline, _ := stream.Context().Deadline()
		var req rpc.GetByTokenReq
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		select {
		case seen <- asked{req.GetToken(), deadline, at}:
		case <-testOver:
		}
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
	// work on for a second after the caller has given up. grpc-timeout
	// travels as the time left, so each hop adds its transit time to the
	// deadline it passes on: Accounts sees the caller's deadline plus at
	// most the time between the call and the stand-in's handler; a fixed
	// cap shows as a deadline a second later than that. That decides only
	// if Accounts was asked before the caller's deadline: on a busy
	// machine (or while the first call opens the connections) it may not
	// be, and the test asks again, with a token of its own per attempt.
	hang := testContext(t)
	for attempt := 1; ; attempt++ {
		token := fmt.Sprint(testToken, "-", attempt)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		callerDeadline, _ := ctx.Deadline()
		done := make(chan error, 1)
		go func() { done <- store(ctx, sys.cache, token, "k", "v") }()

		var got asked
		ended := false
		for got.token != token && !ended {
			select {
			case a := <-seen:
				if a.token == token {
					got = a
				}
			case <-done:
				ended = true
			case <-hang.Done():
				require.FailNow(t, "Accounts was never asked")
			}
		}
		cancel()
		if !ended {
			<-done
		}
		if got.token != token {
			continue // the call ended before Accounts was asked
		}
		require.False(t, got.deadline.IsZero(), "the cache server asked Accounts with no deadline")
		if !got.at.Before(callerDeadline) {
			continue // asked after the caller's deadline: too late to tell
		}
		assert.False(t, got.deadline.Before(callerDeadline), "Accounts was asked with a deadline before the caller's")
		assert.False(t, got.deadline.After(callerDeadline.Add(got.at.Sub(start))),
			"Accounts was asked with a deadline of its own (%v after the caller's), not the caller's", got.deadline.Sub(callerDeadline))
		return
	}
}
