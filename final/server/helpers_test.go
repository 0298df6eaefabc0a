package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"grpcworkshop.example/final/accounts"
	"grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

const tok = "inconshreveable"

func testDirectory() *accounts.Directory {
	return accounts.Accounts(map[string]accounts.Account{
		tok:     {MaxCacheKeys: 1000},
		"other": {MaxCacheKeys: 1000},
		"small": {MaxCacheKeys: 3},
	})
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type stackOpts struct {
	replicas     int
	logger       *slog.Logger
	tuneCache    func(int, *server.CacheConfig)
	tuneAccounts func(*server.AccountsConfig)
}

// startStack runs Accounts and replicas on 127.0.0.1:0 with mutual TLS.
func startStack(t *testing.T, o stackOpts) *devstack.Stack {
	t.Helper()
	if o.replicas == 0 {
		o.replicas = 1
	}
	if o.logger == nil {
		o.logger = quiet
	}
	addrs := make([]string, o.replicas)
	for i := range addrs {
		addrs[i] = "127.0.0.1:0"
	}
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   addrs,
		Logger:       o.logger,
		Directory:    testDirectory(),
		TuneAccounts: o.tuneAccounts,
		TuneCache:    o.tuneCache,
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	return st
}

func dialTarget(t *testing.T, st *devstack.Stack, target, token string, o client.Options) *grpc.ClientConn {
	t.Helper()
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	o.TLS, o.Token = tlsCfg, token
	if o.Retry.InitialBackoff == 0 {
		o.Retry.InitialBackoff = time.Millisecond
	}
	conn, err := client.Dial(target, o)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// cacheClient talks to every replica of st as token.
func cacheClient(t *testing.T, st *devstack.Stack, token string) rpc.CacheClient {
	return rpc.NewCacheClient(dialTarget(t, st, st.Target(), token, client.Options{}))
}

// testContext is a hang guard (a minute), not a speed target: calls that
// test a deadline set their own.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func store(ctx context.Context, c rpc.CacheClient, key, val string, opts ...grpc.CallOption) error {
	_, err := c.Store(ctx, &rpc.StoreReq{Key: key, Val: []byte(val)}, opts...)
	return err
}

func get(ctx context.Context, c rpc.CacheClient, key string, opts ...grpc.CallOption) (string, error) {
	resp, err := c.Get(ctx, &rpc.GetReq{Key: key}, opts...)
	return string(resp.GetVal()), err
}

// replicaOf calls fn and returns the replica that answered.
func replicaOf(t *testing.T, fn func(opt grpc.CallOption) error) string {
	t.Helper()
	var md metadata.MD
	require.NoError(t, fn(grpc.Header(&md)))
	require.Len(t, md.Get(client.ReplicaHeader), 1)
	return md.Get(client.ReplicaHeader)[0]
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var retryOnce = client.RetryPolicy{MaxAttempts: 1}

func mustClientTLS(t *testing.T, st *devstack.Stack) *tls.Config {
	t.Helper()
	cfg, err := tlsutil.Dir(filepath.Dir(st.CA)).Client(true)
	require.NoError(t, err)
	return cfg
}

// label is a method's grpc_method label: its full name without the
// leading slash (from the generated constant, so that it follows a rename).
func label(fullMethod string) string { return strings.TrimPrefix(fullMethod, "/") }
