// Package python holds the Python client and the Go test that runs it.
package python

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"

	gclient "grpcworkshop.example/final/client"
	"grpcworkshop.example/final/devstack"
	"grpcworkshop.example/final/forward"
	"grpcworkshop.example/final/rpc"
	"grpcworkshop.example/final/server"
	"grpcworkshop.example/final/tlsutil"
)

// pythonWithGRPC finds a Python that can import grpc: Debian's first (the
// python3 on PATH may be another one without the package).
func pythonWithGRPC() (string, bool) {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-c", "import grpc").Run() == nil {
			return path, true
		}
	}
	return "", false
}

func TestPythonClientAgainstALiveDeployment(t *testing.T) {
	py, ok := pythonWithGRPC()
	if !ok {
		t.Skip("skipping: no python3 with the grpc module (Debian: apt-get install python3-grpcio python3-protobuf)")
	}
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)

	client := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, append([]string{"cachectl.py", "--addr", st.Target(), "--ca", st.CA}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := client("store", "gopher", "con")
	require.NoError(t, err, out)
	assert.Equal(t, "Stored gopher\n", out)
	out, err = client("get", "gopher")
	require.NoError(t, err, out)
	assert.Equal(t, "con\n", out)
	out, err = client("dump")
	require.NoError(t, err, out)
	assert.Equal(t, "gopher\tcon\n", out, "one Dump gathers from every replica")

	// Keys stored round robin over every replica are read back through
	// each replica alone, by Python and by Go.
	keys := []string{"a", "b", "c", "d", "e", "f"}
	for _, k := range keys {
		out, err := client("store", k, "v"+k)
		require.NoError(t, err, out)
	}
	total := 0
	for _, c := range st.Caches {
		total += c.Service().Data().Len("inconshreveable")
	}
	assert.Equal(t, 1+len(keys), total, "each key stored once, on its owner")
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	for _, addr := range st.CacheAddrs {
		out, err := client("--addr", addr, "get", "e")
		require.NoError(t, err, out)
		assert.Equal(t, "ve\n", out, "through %s alone", addr)
		conn, err := gclient.Dial(addr, gclient.Options{TLS: tlsCfg, Token: "inconshreveable"})
		require.NoError(t, err)
		for _, k := range keys {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := rpc.NewCacheClient(conn).Get(ctx, &rpc.GetReq{Key: k})
			cancel()
			require.NoError(t, err, "key %s through %s", k, addr)
			assert.Equal(t, "v"+k, string(resp.Val))
		}
		conn.Close()
	}

	// A read-modify-write with the revision read.
	out, err = client("--revision", "get", "gopher")
	require.NoError(t, err, out)
	rev, val, ok := strings.Cut(strings.TrimPrefix(out, "revision "), "\n")
	require.True(t, ok, out)
	assert.Equal(t, "con\n", val)
	out, err = client("--if-revision", rev, "--revision", "store", "gopher", "con2")
	require.NoError(t, err, out)
	assert.Regexp(t, `^Stored gopher \(revision \d+\)\n$`, out)
	out, err = client("--if-revision", rev, "store", "gopher", "stale")
	assert.Error(t, err)
	assert.Contains(t, out, "code = FAILED_PRECONDITION")
	out, err = client("--if-absent", "store", "gopher", "stale")
	assert.Error(t, err)
	assert.Contains(t, out, "code = FAILED_PRECONDITION")
	// Batches: one call, each key on its own.
	out, err = client("mset", "x=1", "y=2", "=z")
	assert.Error(t, err, "an empty key is refused on its own")
	assert.Contains(t, out, "Stored x\nStored y\nNot stored : code = INVALID_ARGUMENT")
	out, err = client("mget", "y", "nope", "x")
	assert.Error(t, err)
	assert.Contains(t, out, "y\t2\nnope\t! code = NOT_FOUND desc = key \"nope\" not found\nx\t1\n")
	assert.Contains(t, out, "mget: 1 of 3 keys failed")
	out, err = client("--token", "gopher", "--dry-run", "mset", "p=1", "q=2")
	require.NoError(t, err, out)
	assert.Equal(t, "Would store p\nWould store q\n", out)

	out, err = client("--ca", "/nonexistent/ca.crt", "get", "gopher")
	assert.Error(t, err)
	assert.Contains(t, out, "CA certificate /nonexistent/ca.crt: No such file or directory")
	assert.NotContains(t, out, "Traceback")
	out, err = client("--token", "nobody", "get", "gopher")
	assert.Error(t, err)
	assert.Contains(t, out, "code = UNAUTHENTICATED")
	out, err = client("--token", "gopher", "get", "gopher")
	assert.Error(t, err)
	assert.Contains(t, out, "code = NOT_FOUND", "tenants are isolated for Python clients too")
}

// TestPythonClientSkipsAReplicaThatReportsNotServing drains one replica
// (health NOT_SERVING, still accepting calls during its drain delay): the
// Python client's client-side health checking sends it no call, and gzip
// works on the others.
func TestPythonClientSkipsAReplicaThatReportsNotServing(t *testing.T) {
	py, ok := pythonWithGRPC()
	if !ok {
		t.Skip("skipping: no python3 with the grpc module (Debian: apt-get install python3-grpcio python3-protobuf)")
	}
	var mu sync.Mutex
	direct := map[int]int{} // calls each replica received from a client, not from a peer
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		TuneCache: func(i int, c *server.CacheConfig) {
			c.DrainDelay = time.Minute
			c.ExtraServerOptions = append(c.ExtraServerOptions, grpc.StatsHandler(&countCalls{count: func(forwarded bool) {
				if !forwarded {
					mu.Lock()
					direct[i]++
					mu.Unlock()
				}
			}}))
		},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)

	// Drain replica 3 and wait until it says so.
	tlsCfg, err := tlsutil.ClientConfig(st.CA, "", "")
	require.NoError(t, err)
	conn, err := gclient.Dial(st.CacheAddrs[2], gclient.Options{TLS: tlsCfg})
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: rpc.Cache_ServiceDesc.ServiceName})
	require.NoError(t, err)
	go func() { _ = st.Caches[2].Shutdown(ctx) }()
	for {
		r, err := w.Recv()
		require.NoError(t, err)
		if r.Status == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
	}

	for i := range 9 {
		args := []string{"cachectl.py", "--addr", st.Target(), "--ca", st.CA}
		if i%2 == 1 {
			args = append(args, "--gzip")
		}
		// Each run under its own timeout: nine Python starts on a busy
		// machine can take longer than one shared budget.
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(cctx, py, append(args, "store", fmt.Sprint("k", i), "v")...).CombinedOutput()
		ccancel()
		require.NoError(t, err, string(out))
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Zero(t, direct[2], "the draining replica got no call from the client: %v", direct)
	assert.Equal(t, 9, direct[0]+direct[1])
}

// countCalls reports each call of the Cache service as its headers arrive,
// before any interceptor (forwarding included) runs.
type countCalls struct{ count func(forwarded bool) }

func (c *countCalls) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *countCalls) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok && strings.HasPrefix(h.FullMethod, "/"+rpc.Cache_ServiceDesc.ServiceName+"/") {
		c.count(len(h.Header.Get(forward.Header)) > 0)
	}
}
func (c *countCalls) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *countCalls) HandleConn(context.Context, stats.ConnStats) {}
