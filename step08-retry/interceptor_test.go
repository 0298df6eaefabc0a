package main

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// logCapture keeps what a JSON slog handler writes to it. The handler writes
// each record with a single Write, so every Write is one record.
type logCapture struct {
	mu      sync.Mutex
	records []map[string]any
}

func (c *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(c, nil))
}

func (c *logCapture) Write(p []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, rec)
	return len(p), nil
}

// rpcLine is the part of an "rpc" record that identifies the call.
type rpcLine struct{ side, method, code string }

// rpcs returns the "rpc" records logged so far, in order.
func (c *logCapture) rpcs() []rpcLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lines []rpcLine
	for _, r := range c.records {
		if r["msg"] == "rpc" {
			lines = append(lines, rpcLine{side: str(r["side"]), method: str(r["method"]), code: str(r["code"])})
		}
	}
	return lines
}

// all returns every record logged so far.
func (c *logCapture) all() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.records...)
}

func str(v any) string { s, _ := v.(string); return s }

const (
	cacheStore = "/rpc.Cache/Store"
	cacheGet   = "/rpc.Cache/Get"
	getByToken = "/rpc.Accounts/GetByToken"
)

func TestEveryRPCIsLoggedOnBothSides(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	require.NoError(t, store(ctx, sys.cache, testToken, "gopher", "con"))
	_, err := get(ctx, sys.cache, testToken, "gopher")
	require.NoError(t, err)

	assert.Equal(t, []rpcLine{
		{"client", cacheStore, "OK"},
		{"client", cacheGet, "OK"},
	}, sys.clientLog.rpcs())
	// The cache server logs the calls it serves and the calls it makes.
	assert.Equal(t, []rpcLine{
		{"client", getByToken, "OK"},
		{"server", cacheStore, "OK"},
		{"client", getByToken, "OK"},
		{"server", cacheGet, "OK"},
	}, sys.cacheLog.rpcs())
	assert.Equal(t, []rpcLine{
		{"server", getByToken, "OK"},
		{"server", getByToken, "OK"},
	}, sys.accountsLog.rpcs())
}

func TestFailingRPCIsLoggedWithItsCode(t *testing.T) {
	sys := startSystem(t)
	ctx := testContext(t)

	_, err := get(ctx, sys.cache, testToken, "nothing-here")
	require.Equal(t, codes.NotFound, status.Code(err))
	err = store(ctx, sys.cache, "no-such-token", "k", "v")
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	assert.Equal(t, []rpcLine{
		{"client", cacheGet, "NotFound"},
		{"client", cacheStore, "Unauthenticated"},
	}, sys.clientLog.rpcs())
	assert.Equal(t, []rpcLine{
		{"client", getByToken, "OK"},
		{"server", cacheGet, "NotFound"},
		{"client", getByToken, "NotFound"},
		{"server", cacheStore, "Unauthenticated"},
	}, sys.cacheLog.rpcs())
	assert.Equal(t, []rpcLine{
		{"server", getByToken, "OK"},
		{"server", getByToken, "NotFound"},
	}, sys.accountsLog.rpcs())

	for _, r := range sys.clientLog.all() {
		assert.NotEmpty(t, r["error"], "a failed call's record carries its message: %v", r)
	}
}

func TestRPCRecordsNameThePeerAndTheDuration(t *testing.T) {
	sys := startSystem(t)
	require.NoError(t, store(testContext(t), sys.cache, testToken, "gopher", "con"))

	client := sys.clientLog.all()
	require.Len(t, client, 1)
	assert.Equal(t, sys.addr, client[0]["peer"], "the client names the server it reached")
	assert.Contains(t, client[0], "duration")

	for _, r := range sys.cacheLog.all() {
		host, _, err := net.SplitHostPort(str(r["peer"]))
		require.NoError(t, err, "record %v", r)
		assert.Equal(t, "127.0.0.1", host)
		assert.Contains(t, r, "duration")
		assert.NotContains(t, r, "error")
	}
}

func TestCallThatReachesNoServerIsStillLogged(t *testing.T) {
	certs := devCerts(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens here any more

	sys := startCacheWith(t, certs, testServerConfig(t, certs, deadAddr))
	err = store(testContext(t), sys.cache, testToken, "k", "v")
	require.Equal(t, codes.Unavailable, status.Code(err))

	assert.Equal(t, []rpcLine{
		{"client", getByToken, "Unavailable"},
		{"server", cacheStore, "Unavailable"},
	}, sys.cacheLog.rpcs())
	assert.Equal(t, "", sys.cacheLog.all()[0]["peer"], "no peer was reached")
}

func TestEveryCallShowsOnTheTerminalsOfTheCommands(t *testing.T) {
	// The commands' configurations are made while stderr is a file, so
	// the file holds what a person running them would see on stderr.
	stderr := os.Stderr
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer f.Close()
	os.Stderr = f
	certs := devCerts(t)
	accountsCfg := testAccountsConfig(t, certs, testAccounts)
	serverCfg := testServerConfig(t, certs, startAccounts(t, accountsCfg))
	clientCfg := testClientConfig(t, certs, startServer(t, serverCfg))
	os.Stderr = stderr

	_, err = runClientCmd(t, clientCfg, "store", "gopher", "con")
	require.NoError(t, err)
	_, err = runClientCmd(t, clientCfg, "get", "nothing-here")
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	out, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	var calls []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, " msg=rpc ") {
			continue
		}
		var side, method, code string
		for _, field := range strings.Fields(line) {
			k, v, _ := strings.Cut(field, "=")
			switch k {
			case "side":
				side = v
			case "method":
				method = v
			case "code":
				code = v
			}
		}
		calls = append(calls, side+" "+method+" "+code)
	}
	// The client, the cache server and Accounts each write one record per
	// call, the server before its answer leaves, so the order is fixed.
	assert.Equal(t, []string{
		"server /rpc.Accounts/GetByToken OK",
		"client /rpc.Accounts/GetByToken OK",
		"server /rpc.Cache/Store OK",
		"client /rpc.Cache/Store OK",
		"server /rpc.Accounts/GetByToken OK",
		"client /rpc.Accounts/GetByToken OK",
		"server /rpc.Cache/Get NotFound",
		"client /rpc.Cache/Get NotFound",
	}, calls, "the records on the commands' stderr (all of it below):\n%s", out)
}
