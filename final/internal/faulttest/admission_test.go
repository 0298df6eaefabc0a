package faulttest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/internal/faulttest"
	"grpcworkshop.example/final/rpc"
)

// noRetry makes a client report every failure, so a test counts what the
// server answered rather than what retries hid.
var noRetry = client.Options{Retry: client.RetryPolicy{MaxAttempts: 1}}

// attacker is the address floods come from, so that per-address limits
// can tell them apart from the good tenant on 127.0.0.1.
const attacker = "127.0.0.2"

// About 1,100 sockets that never start TLS must not lock other clients
// out: they are capped per address and dropped after the handshake
// timeout, and only handshaked connections count towards the total.
func TestIdleSocketsDoNotLockOutOtherClients(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	addr := s.Replicas[0].Addr

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}, Timeout: 5 * time.Second}
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range 1100 {
		c, err := d.Dial("tcp", addr) // the kernel's backlog accepts even when the server does not
		require.NoError(t, err)
		idle = append(idle, c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := rpc.NewCacheClient(s.Dial(addr, "good", noRetry))
	_, err := c.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err, "a new client gets in beside 1,100 idle sockets")
	got, err := c.Get(ctx, &rpc.GetReq{Key: "k"})
	require.NoError(t, err)
	assert.Equal(t, "v", string(got.GetVal()))

	// And the server lets go of every idle socket: those over the limits at
	// once, the others at the handshake timeout (5s; gRPC's default is 120s).
	deadline := time.Now().Add(15 * time.Second)
	for i, c := range idle {
		require.NoError(t, c.SetReadDeadline(deadline))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "idle socket %d still open after 15s", i)
	}
}

// Idle sockets from a few addresses, each address under its own cap but
// together holding every pending slot, must not lock out a client from
// another address: its socket takes the place of one of theirs.
func TestIdleSocketsFromAFewAddressesDoNotLockOutOtherClients(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	addr := s.Replicas[0].Addr

	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	// 3 x 128 (-max-conns-per-addr) sockets: more than -max-pending-conns (256).
	for _, from := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		for range 128 {
			c, err := d.Dial("tcp", addr)
			require.NoError(t, err)
			idle = append(idle, c)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := rpc.NewCacheClient(s.Dial(addr, "good", noRetry))
	_, err := c.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err, "a new client gets in while three addresses hold every pending slot")
}

// 16 MB of metadata on 32 calls without any token must not cost the
// replica memory: headers are bounded (MaxHeaderListSize) before anything
// else looks at them.
func TestHugeHeadersDoNotCostTheReplicaMemory(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{})
	r := s.Replicas[0]
	base := r.RSS()

	// 16 MB of metadata, encoded once for every connection.
	block, err := faulttest.EncodeHeaders(rpc.Cache_Get_FullMethodName, []faulttest.Header{{Name: "x-junk", Value: strings.Repeat("abcdefghijklmnop", 1<<20)}})
	require.NoError(t, err)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // RSS is a level, not an event: it is sampled while the flood runs
		defer close(sampled)
		for {
			if n, err := faulttest.ReadRSS(r.Pid()); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rc, err := faulttest.DialRaw(ctx, r.Addr, attacker, s.TLS())
			if !assert.NoError(t, err) {
				return
			}
			defer rc.Close()
			id, err := rc.CallEncoded(block, nil)
			if err != nil {
				return // the server may close the connection mid-flood: that is a fine answer
			}
			_, _, _ = rc.Result(id) // refused one way or another; only the cost matters
		})
	}
	wg.Wait()
	close(stop)
	<-sampled

	t.Logf("replica RSS: %d MB before, peak %d MB during the flood of 32 x 16 MB headers", base>>20, peak.Load()>>20)
	assert.Less(t, peak.Load(), base+64<<20, "the flood costs the replica less than 64 MB")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = s.Client("good").Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	require.NoError(t, err, "and it still serves")
}

type tally struct {
	mu    sync.Mutex
	codes map[codes.Code]int
	n     int
}

func (t *tally) add(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.codes == nil {
		t.codes = map[codes.Code]int{}
	}
	t.codes[status.Code(err)]++
	t.n++
}

func (t *tally) ok() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.codes[codes.OK]
}

// flood runs call from workers goroutines until ctx ends.
func flood(ctx context.Context, workers int, call func(ctx context.Context) error) *tally {
	var t tally
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := call(cctx)
				cancel()
				if ctx.Err() == nil {
					t.add(err)
				}
			}
		})
	}
	wg.Wait()
	return &t
}

// goodTenant calls Get at a steady pace well inside its own and the
// replica's limits until ctx ends, and checks health alongside.
func goodTenant(ctx context.Context, c rpc.CacheClient, h healthpb.HealthClient) (calls, health *tally) {
	calls, health = &tally{}, &tally{}
	tick := time.NewTicker(20 * time.Millisecond) // 50 calls a second
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return calls, health
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Get(cctx, &rpc.GetReq{Key: "k"})
		calls.add(err)
		resp, err := h.Check(cctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = status.Error(codes.Unavailable, resp.GetStatus().String())
		}
		health.add(err)
		cancel()
	}
}

// floodBeside runs the flood and the good tenant side by side for d.
func floodBeside(t *testing.T, s *faulttest.Stack, d time.Duration, workers int, call func(ctx context.Context, c rpc.CacheClient) error, token func() string) (good, health, bad *tally) {
	addr := s.Replicas[0].Addr
	c := rpc.NewCacheClient(s.Dial(addr, "good", noRetry))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := c.Store(ctx, &rpc.StoreReq{Key: "k", Val: []byte("v")})
	cancel()
	require.NoError(t, err)
	h := healthpb.NewHealthClient(s.Dial(addr, "", noRetry))

	// The attacker's calls go out on a few connections of their own.
	var conns []*grpc.ClientConn
	for range 4 {
		conns = append(conns, s.Dial(addr, "", noRetry))
	}
	var i atomic.Int64
	fctx, fcancel := context.WithTimeout(context.Background(), d)
	defer fcancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		good, health = goodTenant(fctx, c, h)
	}()
	bad = flood(fctx, workers, func(ctx context.Context) error {
		conn := conns[i.Add(1)%int64(len(conns))]
		return call(tokenCtx(ctx, token()), rpc.NewCacheClient(conn))
	})
	<-done
	return good, health, bad
}

func tokenCtx(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadataAuth(ctx, tok)
}

func randomToken() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Replica limits for the floods: small, so a test floods them cheaply.
func floodArgs(int) []string { return []string{"-rate", "200", "-unauth-rate", "20"} }

// A flood of calls without a token must not use up the paying tenants'
// budget: the good tenant, well inside its limits, gets every call
// through, and health checks are never rate limited.
func TestTokenlessFloodDoesNotStarveAPayingTenant(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{CacheArgs: floodArgs})
	get := func(ctx context.Context, c rpc.CacheClient) error {
		_, err := c.Get(ctx, &rpc.GetReq{Key: "k"})
		return err
	}
	good, health, bad := floodBeside(t, s, 3*time.Second, 16, get, func() string { return "" })
	t.Logf("tokenless flood: %d calls %v; good tenant %d/%d ok; health %d/%d SERVING",
		bad.n, bad.codes, good.ok(), good.n, health.ok(), health.n)
	require.NotZero(t, good.n)
	assert.Equal(t, good.n, good.ok(), "every call of the good tenant succeeds: %v", good.codes)
	assert.Equal(t, health.n, health.ok(), "every health check answers SERVING: %v", health.codes)
	assert.Zero(t, bad.ok(), "no tokenless call succeeds")
}

// A flood of random tokens must neither starve the good tenant nor turn
// into as many calls to Accounts: unknown tokens share the small
// unauthenticated budget, and one that Accounts refused is refused from
// the negative cache.
func TestRandomTokenFloodDoesNotStarveAPayingTenantNorAccounts(t *testing.T) {
	s := faulttest.Start(t, faulttest.Options{
		CacheArgs:    floodArgs,
		AccountsArgs: []string{"-log-level", "info"}, // one line per call: the test counts lookups
	})
	get := func(ctx context.Context, c rpc.CacheClient) error {
		_, err := c.Get(ctx, &rpc.GetReq{Key: "k"})
		return err
	}
	good, health, bad := floodBeside(t, s, 3*time.Second, 16, get, randomToken)
	lookups := strings.Count(s.Accounts.Log(), rpc.Accounts_GetByToken_FullMethodName)
	t.Logf("random-token flood: %d calls %v; %d lookups at Accounts; good tenant %d/%d ok; health %d/%d SERVING",
		bad.n, bad.codes, lookups, good.ok(), good.n, health.ok(), health.n)
	require.NotZero(t, good.n)
	assert.Equal(t, good.n, good.ok(), "every call of the good tenant succeeds: %v", good.codes)
	assert.Equal(t, health.n, health.ok(), "every health check answers SERVING: %v", health.codes)
	assert.Zero(t, bad.ok())
	// The unauthenticated budget (20/s, burst 2) refused part of the flood
	// (16 callers start at once, so the burst is spent at once, however
	// fast the machine), and a refused call never reaches Accounts: the
	// lookups are at most the calls it let through, plus the 16 in flight
	// when the flood ended (not tallied) and the good tenant's own (one
	// per AuthTTL).
	refused := bad.codes[codes.ResourceExhausted]
	assert.NotZero(t, refused, "the unauthenticated budget refused none of the flood: %v", bad.codes)
	assert.LessOrEqual(t, lookups, bad.n-refused+16+5, "lookups at Accounts are bounded by the calls the budget let through, not by the flood (%d calls, %d refused)", bad.n, refused)

	// One bad token repeated: Accounts hears of it once per negative-cache period.
	before := strings.Count(s.Accounts.Log(), rpc.Accounts_GetByToken_FullMethodName)
	c := rpc.NewCacheClient(s.Dial(s.Replicas[0].Addr, "", noRetry))
	bad = flood(contextFor(t, time.Second), 8, func(ctx context.Context) error {
		return get(tokenCtx(ctx, "same-bad-token"), c)
	})
	repeated := strings.Count(s.Accounts.Log(), rpc.Accounts_GetByToken_FullMethodName) - before
	t.Logf("one bad token repeated %d times: %d lookups at Accounts", bad.n, repeated)
	assert.LessOrEqual(t, repeated, 3, "a refused token is remembered (negative cache)")
	assert.Zero(t, bad.ok())
	assert.NotZero(t, bad.codes[codes.Unauthenticated], "refused as Unauthenticated: %v", bad.codes)
}

func contextFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
