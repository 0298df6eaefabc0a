// Package python holds the Python client and the Go test that runs it.
package python

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	gclient "grpcworkshop/final/client"
	"grpcworkshop/final/devstack"
	"grpcworkshop/final/rpc"
	"grpcworkshop/final/tlsutil"
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
