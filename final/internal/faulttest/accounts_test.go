package faulttest_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/rpc"
)

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func retryInfo(err error) *errdetails.RetryInfo {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}

// With Accounts killed, a tenant the replica already knows keeps reading
// and overwriting its keys long after the auth cache's TTL (stale-if-
// error), for the documented time and no longer, while what needs
// Accounts (a new key, an unknown token) fails at once with Unavailable
// and a RetryInfo. The stale window is scaled down (-auth-stale 2s; 5m by
// default) so the test sees its end.
func TestKnownTenantsKeepWorkingWithAccountsDown(t *testing.T) {
	const ttl, stale = 200 * time.Millisecond, 2 * time.Second
	s := faulttest.Start(t, faulttest.Options{CacheArgs: func(int) []string {
		return []string{"-auth-ttl", ttl.String(), "-auth-stale", stale.String()}
	}})
	addr := s.Replicas[0].Addr
	c := rpc.NewCacheClient(s.Dial(addr, "good", noRetry))
	looked := time.Now() // the first call looks the token up
	_, err := c.Store(callCtx(t), &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err)

	s.Accounts.Kill()
	down := time.Now()
	// The last lookup came before Accounts died: the window ends by
	// down+ttl+stale, so a call begun after that must fail, however long
	// the calls take.
	closed := down.Add(ttl + stale)
	var calls int
	var last error
	tick := time.NewTicker(10 * time.Millisecond) // inside the tenant's rate limit
	defer tick.Stop()
	for {
		<-tick.C
		began := time.Now()
		got, err := c.Get(callCtx(t), &rpc.GetReq{Key: "k"})
		if err == nil {
			assert.Equal(t, "v", string(got.GetVal()))
			_, err = c.Store(callCtx(t), &rpc.StoreReq{Key: "k", Val: []byte("v")})
		}
		if err != nil {
			last = err
			break
		}
		require.False(t, began.After(closed), "stale answers do not serve forever: a call begun %v after the window's end succeeded", began.Sub(closed))
		calls += 2
	}
	worked := time.Since(down)
	t.Logf("a known tenant's Gets and overwrites worked for %v after Accounts died (%d calls; -auth-ttl %v, -auth-stale %v)",
		worked.Round(time.Millisecond), calls, ttl, stale)
	// The last lookup came after looked, so the window ends no sooner than this.
	assert.GreaterOrEqual(t, worked, ttl+stale-down.Sub(looked), "they work until AuthTTL+AuthStale after the last lookup")
	assert.Equal(t, codes.Unavailable, status.Code(last), "and then stop: %v", last)

	_, err = c.Store(callCtx(t), &rpc.StoreReq{Key: "new", Val: []byte("v")})
	assert.Equal(t, codes.Unavailable, status.Code(err), "a new key needs Accounts: %v", err)
	_, err = rpc.NewCacheClient(s.Dial(addr, "small", noRetry)).Get(callCtx(t), &rpc.GetReq{Key: "k"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "so does a token the replica has not seen: %v", err)
	assert.NotNil(t, retryInfo(err), "with a RetryInfo")
}

// A hung Accounts (SIGSTOP: its sockets stay open, nothing answers) costs
// a call about a second, not the caller's deadline: the replica answers
// Unavailable with a RetryInfo, and a known tenant keeps working.
func TestHungAccountsFailsFastWithRetryInfo(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{CacheArgs: func(int) []string { return []string{"-auth-ttl", "200ms"} }})
	addr := s.Replicas[0].Addr
	good := rpc.NewCacheClient(s.Dial(addr, "good", noRetry))
	_, err := good.Store(callCtx(t), &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err)
	small := rpc.NewCacheClient(s.Dial(addr, "small", noRetry))

	s.Accounts.Pause()
	t.Cleanup(s.Accounts.Resume)

	// The caller allows 8s; a replica that waited for Accounts would
	// answer DeadlineExceeded.
	start := time.Now()
	_, err = small.Get(callCtx(t), &rpc.GetReq{Key: "k"})
	took := time.Since(start)
	t.Logf("unknown token with Accounts hung: %v after %v", status.Code(err), took.Round(time.Millisecond))
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.NotNil(t, retryInfo(err), "with a RetryInfo")

	start = time.Now()
	_, err = good.Store(callCtx(t), &rpc.StoreReq{Key: "new", Val: []byte("v")})
	t.Logf("new key with Accounts hung: %v after %v", status.Code(err), time.Since(start).Round(time.Millisecond))
	assert.Equal(t, codes.Unavailable, status.Code(err), "a new key's reservation fails fast too: %v", err)

	for range 5 {
		got, err := good.Get(callCtx(t), &rpc.GetReq{Key: "k"})
		require.NoError(t, err, "a known tenant keeps reading")
		assert.Equal(t, "v", string(got.GetVal()))
	}

	s.Accounts.Resume()
	resumed := time.Now()
	for {
		_, err = small.Get(callCtx(t), &rpc.GetReq{Key: "k"})
		if status.Code(err) == codes.NotFound { // authenticated: Accounts answered
			break
		}
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		require.Less(t, time.Since(resumed), 10*time.Second, "Accounts answers again, but the replica does not ask it")
		time.Sleep(20 * time.Millisecond) // polling for recovery is the measurement
	}
	t.Logf("the replica used Accounts again %v after it resumed", time.Since(resumed).Round(time.Millisecond))
}

// After Accounts has been down for a while (long enough for gRPC's
// default reconnection backoff to grow past 10s), replicas reach it within
// about a second of its return: through the outage the replica tries to
// connect at least twice as often as a client with gRPC's default backoff
// that went through the same outage (about 20 tries to 6), whatever the
// machine's speed.
func TestReplicasReconnectSoonAfterAccountsReturns(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	addr := s.Replicas[0].Addr
	c := rpc.NewCacheClient(s.Dial(addr, "good", noRetry))
	_, err := c.Store(callCtx(t), &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err)
	small := rpc.NewCacheClient(s.Dial(addr, "small", noRetry))
	// The yardstick: gRPC's defaults, connecting from 127.0.0.2 (the
	// replica connects from 127.0.0.1).
	yardstick, err := grpc.NewClient(s.Accounts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	require.NoError(t, err)
	defer yardstick.Close()

	s.Accounts.Kill()
	// While Accounts is down, a stand-in on its port counts the attempts
	// to connect, by the caller's address, and closes each.
	lis, err := net.Listen("tcp", s.Accounts.Addr)
	require.NoError(t, err)
	var fromReplica, fromYardstick atomic.Int64
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			if conn.RemoteAddr().(*net.TCPAddr).IP.Equal(net.IPv4(127, 0, 0, 2)) {
				fromYardstick.Add(1)
			} else {
				fromReplica.Add(1)
			}
			conn.Close()
		}
	}()
	// Calls while it is down make the replica try (and back off) again;
	// Connect does the same for the yardstick.
	const outage = 20 * time.Second
	down := time.Now()
	for time.Since(down) < outage {
		_, err := small.Get(callCtx(t), &rpc.GetReq{Key: "k"})
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		yardstick.Connect()
		time.Sleep(100 * time.Millisecond) // paced outage traffic, not a wait for an event
	}
	lis.Close()
	<-counted
	t.Logf("attempts to connect in the %v outage: %d by the replica, %d with gRPC's default backoff", outage, fromReplica.Load(), fromYardstick.Load())
	require.NotZero(t, fromYardstick.Load(), "the yardstick tried to connect")
	assert.GreaterOrEqual(t, fromReplica.Load(), 2*fromYardstick.Load(), "the replica backs off as long as gRPC's default (up to 120s), not up to a second")

	s.Accounts.Start()
	back := time.Now()
	for {
		_, err := small.Get(callCtx(t), &rpc.GetReq{Key: "k"})
		if status.Code(err) == codes.NotFound { // authenticated: Accounts was reached
			break
		}
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		require.Less(t, time.Since(back), time.Minute, "the replica never reached Accounts again") // a hang guard
		time.Sleep(20 * time.Millisecond)                                                          // polling for recovery
	}
	t.Logf("a replica reached Accounts %v after it was listening again (after a %v outage)", time.Since(back).Round(time.Millisecond), outage)
}
