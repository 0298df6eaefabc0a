package main

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"grpcworkshop/step07-metadata/rpc"
)

// deadlineRecorder reports the deadline every GetByToken runs under, and how
// the call ended. Until slow is set it answers at once, unrecorded: that is
// for warming up (see startSlowSystem).
type deadlineRecorder struct {
	rpc.AccountsServer                    // answers after an hour, unless its caller gives up first
	fast               rpc.AccountsServer // answers at once
	slow               atomic.Bool
	seen               chan time.Time // the zero Time when the call had no deadline
	ended              chan error
}

func (r *deadlineRecorder) GetByToken(ctx context.Context, req *rpc.GetByTokenReq) (*rpc.GetByTokenResp, error) {
	if !r.slow.Load() {
		return r.fast.GetByToken(ctx, req)
	}
	deadline, _ := ctx.Deadline()
	r.seen <- deadline
	resp, err := r.AccountsServer.GetByToken(ctx, req)
	r.ended <- err
	return resp, err
}

// startSlowSystem runs the cache server with accountsTimeout as its cap, and
// an Accounts service that would take an hour to answer, unless its caller
// gives up first, and that reports what it sees. That Accounts service is a
// stand-in: what is under test is the cache server's runServer.
//
// Before it turns slow, one call opens both connections (the client's to
// the cache server, the cache server's to Accounts): a short deadline in the
// test then bounds a call over open connections, not a TLS handshake that a
// busy machine can make last longer than the deadline, so that the call
// would end before Accounts ever saw it.
func startSlowSystem(t *testing.T, accountsTimeout time.Duration) (*testSystem, *deadlineRecorder) {
	t.Helper()
	certs := devCerts(t)
	accounts := testAccountsMap(t)
	rec := &deadlineRecorder{
		AccountsServer: NewAccountsService(accounts, time.Hour),
		fast:           NewAccountsService(accounts, 0),
		seen:           make(chan time.Time, 10),
		ended:          make(chan error, 10),
	}
	creds, err := credentials.NewServerTLSFromFile(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(creds))
	rpc.RegisterAccountsServer(srv, rec)
	addr := serveOnLoopback(t, func(ctx context.Context, lis net.Listener) error { return serve(ctx, srv, lis) })
	cfg := testServerConfig(t, certs, addr)
	cfg.accountsTimeout = accountsTimeout
	sys := startCacheWith(t, certs, cfg)
	// NotFound says Accounts answered; until then (a short cap may end the
	// first calls while the connections are still being opened) try again.
	ctx := testContext(t)
	for {
		_, err = get(ctx, sys.cache, testToken, "warm-up")
		if status.Code(err) == codes.NotFound {
			break
		}
		require.NoError(t, ctx.Err(), "warming up: %v", err)
	}
	rec.slow.Store(true)
	return sys, rec
}

// receive waits for the next value on ch, failing the test if none comes
// before the test's own timeout.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-testContext(t).Done():
		require.FailNow(t, "timed out waiting")
		panic("unreachable")
	}
}

// noDeadlineContext carries no deadline to the server, but is still
// cancelled after a while, so a failing test does not hang.
func noDeadlineContext(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	stop := time.AfterFunc(10*time.Second, cancel)
	t.Cleanup(func() { stop.Stop(); cancel() })
	return ctx
}

func TestSlowAccountsFailsAtTheCallersDeadlineNotTheServersCap(t *testing.T) {
	sys, accounts := startSlowSystem(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	callerDeadline, _ := ctx.Deadline()

	err := store(ctx, sys.cache, testToken, "k", "v")
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "got %v", err)

	seen := receive(t, accounts.seen)
	require.False(t, seen.IsZero(), "the call to Accounts carries a deadline")
	// The server's cap is an hour away; the caller's deadline is what Accounts sees.
	assert.WithinDuration(t, callerDeadline, seen, time.Minute)
	// And Accounts stopped working on it instead of sleeping out its hour.
	assert.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Canceled}, status.Code(receive(t, accounts.ended)))
}

func TestWithoutACallerDeadlineTheServerCapsTheAccountsCall(t *testing.T) {
	sys, accounts := startSlowSystem(t, 200*time.Millisecond)
	ctx := noDeadlineContext(t)
	guard := time.Now().Add(10 * time.Second)

	_, err := get(ctx, sys.cache, testToken, "k")
	st := status.Convert(err)
	assert.Equal(t, codes.DeadlineExceeded, st.Code(), "got %v", err)
	assert.Equal(t, "accounts service did not answer in time", st.Message(), "the server's cap fired, not the caller's context")

	seen := receive(t, accounts.seen)
	require.False(t, seen.IsZero(), "the server bounds its call to Accounts")
	assert.True(t, seen.Before(guard))
}

func TestAccountsLatencyEndsWhenTheCallerGivesUp(t *testing.T) {
	svc := NewAccountsService(testAccountsMap(t), time.Hour)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()

	_, err := svc.GetByToken(ctx, &rpc.GetByTokenReq{Token: testToken})
	assert.Equal(t, codes.Canceled, status.Code(err))
}

func TestClientCommandGivesUpAtItsStoreDeadline(t *testing.T) {
	certs := devCerts(t)
	acfg := testAccountsConfig(t, certs, testAccounts)
	acfg.latency = time.Hour
	scfg := testServerConfig(t, certs, startAccounts(t, acfg))
	scfg.accountsTimeout = time.Hour
	cfg := testClientConfig(t, certs, startCacheWith(t, certs, scfg).addr)
	cfg.storeTimeout = 100 * time.Millisecond
	cfg.cmd = []string{"store", "k", "v"}

	// Whatever deadline the Store has, runClient gave it: this context has none.
	err := runClient(noDeadlineContext(t), cfg, io.Discard)
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "got %v", err)
}
