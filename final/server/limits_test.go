package server_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// eventListener records, in order, when the server takes a connection from
// the listener ("accept") and when it closes one ("close").
type eventListener struct {
	net.Listener
	mu  sync.Mutex
	log []string
}

func (l *eventListener) record(e string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = append(l.log, e)
}

func (l *eventListener) events() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.log...)
}

func (l *eventListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.record("accept")
	return &eventConn{Conn: c, l: l}, nil
}

type eventConn struct {
	net.Conn
	l    *eventListener
	once sync.Once
}

func (c *eventConn) Close() error {
	c.once.Do(func() { c.l.record("close") })
	return c.Conn.Close()
}

// serveCache runs one more replica of st, with the stack's certificates, on lis.
func serveCache(t *testing.T, st *devstack.Stack, lis net.Listener, tune func(*server.CacheConfig)) {
	t.Helper()
	srvTLS, err := tlsutil.Dir(filepath.Dir(st.CA)).Server(false)
	require.NoError(t, err)
	cfg := server.DefaultCacheConfig()
	cfg.TLS, cfg.Logger = srvTLS, quiet
	cfg.ReplicaID = "extra"
	cfg.Accounts.Addr, cfg.Accounts.TLS = st.AccountsAddr, mustClientTLS(t, st)
	tune(&cfg)
	srv, err := server.NewCache(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	go srv.Serve(lis)
}

// wait receives from ch, failing the test if ctx (the safety net) ends first.
func wait[T any](t *testing.T, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
		var zero T
		return zero
	}
}

func TestConnectionsOverTheCapWaitUntilOneCloses(t *testing.T) {
	st := startStack(t, stackOpts{})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lis := &eventListener{Listener: raw}
	serveCache(t, st, lis, func(c *server.CacheConfig) { c.MaxConns = 1 })
	addr := raw.Addr().String()
	ctx := testContext(t)

	first := dialTarget(t, st, addr, tok, client.Options{})
	require.NoError(t, store(ctx, rpc.NewCacheClient(first), "k", "v"))

	// The second client's TCP connection is made (the kernel completes it
	// whether or not the server accepts), then its call waits.
	dialed := make(chan struct{})
	var dialOnce sync.Once
	second := dialTarget(t, st, addr, tok, client.Options{Extra: []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
			if err == nil {
				dialOnce.Do(func() { close(dialed) })
			}
			return c, err
		}),
	}})
	type result struct {
		val         string
		err         error
		firstClosed bool
	}
	var firstClosed atomic.Bool
	done := make(chan result, 1)
	go func() {
		v, err := get(ctx, rpc.NewCacheClient(second), "k", grpc.WaitForReady(true))
		done <- result{v, err, firstClosed.Load()}
	}()
	wait(t, ctx, dialed, "second connection dialled")

	require.NoError(t, store(ctx, rpc.NewCacheClient(first), "k", "v"), "the first connection is still served")
	select {
	case r := <-done:
		t.Fatalf("the second connection was served while the first was open (MaxConns=1): %v", r.err)
	default:
	}

	firstClosed.Store(true)
	require.NoError(t, first.Close())
	r := wait(t, ctx, done, "second call")
	require.NoError(t, r.err, "the second connection is served once the first closes")
	assert.Equal(t, "v", r.val)
	assert.True(t, r.firstClosed, "and only after it closed")
	// The admission listener may take the second socket from the kernel
	// while the first is still in its handshake, but holds it, unserved,
	// until the first closes (firstClosed above).
	assert.ElementsMatch(t, []string{"accept", "accept", "close"}, lis.events()[:3])
}

func TestCallsOverTheStreamCapWaitForOneToFinish(t *testing.T) {
	const n = 2
	type entry struct{ afterRelease bool }
	entered := make(chan entry, n+1)
	release := make(chan struct{})
	var released atomic.Bool
	var inFlight, most atomic.Int64
	hold := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod != rpc.Cache_Get_FullMethodName {
			return h(ctx, req)
		}
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); cur > m && !most.CompareAndSwap(m, cur); m = most.Load() {
		}
		entered <- entry{released.Load()}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return h(ctx, req)
	}
	st := startStack(t, stackOpts{tuneCache: func(_ int, c *server.CacheConfig) {
		c.MaxConcurrentStreams = n
		c.Unary = append(c.Unary, hold)
	}})
	c := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], tok, client.Options{}))
	other := rpc.NewCacheClient(dialTarget(t, st, st.CacheAddrs[0], "other", client.Options{}))
	ctx := testContext(t)
	require.NoError(t, store(ctx, c, "k", "v")) // also: the client has the server's SETTINGS

	results := make(chan error, n+1)
	getK := func() {
		got, err := get(ctx, c, "k")
		if err == nil && got != "v" {
			err = assert.AnError
		}
		results <- err
	}
	for range n {
		go getK()
	}
	for range n {
		e := wait(t, ctx, entered, "calls in flight")
		require.False(t, e.afterRelease)
	}

	go getK() // the (n+1)th call on the same connection
	require.NoError(t, store(ctx, other, "k", "v"), "another connection is served meanwhile")
	select {
	case <-entered:
		t.Fatalf("call %d ran while %d were in flight (MaxConcurrentStreams=%d)", n+1, n, n)
	default:
	}

	released.Store(true)
	release <- struct{}{} // one of the n finishes
	e := wait(t, ctx, entered, "the waiting call")
	assert.True(t, e.afterRelease, "the waiting call runs only after one in flight finished")
	close(release)
	for range n + 1 {
		require.NoError(t, wait(t, ctx, results, "results"))
	}
	assert.EqualValues(t, n, most.Load(), "never more than MaxConcurrentStreams calls at once on one connection")
}
