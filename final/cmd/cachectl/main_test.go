package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/devstack"
)

func TestCachectlAgainstADevstack(t *testing.T) {
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Telemetry:    true, AccountsAdminAddr: "127.0.0.1:0",
		CacheAdminAddrs: []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	ctl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(append([]string{"-addr", st.Target(), "-ca", st.CA, "-timeout", "10s"}, args...), &out)
		return out.String(), err
	}

	out, err := ctl("store", "gopher", "con")
	require.NoError(t, err)
	assert.Contains(t, out, "Stored gopher (replica cache-")
	out, err = ctl("get", "gopher")
	require.NoError(t, err)
	assert.Equal(t, "con\n", out)

	// A read-modify-write: the revision read makes the store conditional.
	out, err = ctl("-revision", "get", "gopher")
	require.NoError(t, err)
	rev, val, ok := strings.Cut(strings.TrimPrefix(out, "revision "), "\n")
	require.True(t, ok, out)
	assert.Equal(t, "con\n", val)
	out, err = ctl("-if-revision", rev, "-revision", "store", "gopher", "con2")
	require.NoError(t, err)
	assert.Regexp(t, `^Stored gopher \(replica cache-\d, revision \d+\)\n$`, out)
	_, err = ctl("-if-revision", rev, "store", "gopher", "stale")
	assert.ErrorContains(t, err, "code = FailedPrecondition desc = key \"gopher\" is at revision")
	_, err = ctl("-if-absent", "store", "gopher", "stale")
	assert.ErrorContains(t, err, "code = FailedPrecondition")
	out, err = ctl("get", "gopher")
	require.NoError(t, err)
	assert.Equal(t, "con2\n", out)

	for _, k := range []string{"a", "b", "c"} {
		_, err := ctl("-token", "gopher", "store", k, "v")
		require.NoError(t, err)
	}
	_, err = ctl("-token", "gopher", "store", "d", "v")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "code = FailedPrecondition desc = account exceeds max key limit 3 (quota tenant:gopher")
	out, err = ctl("-token", "gopher", "dump")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a\tv", "b\tv", "c\tv"}, strings.Split(strings.TrimSpace(out), "\n"), "every replica's part")

	_, err = ctl("-dry-run", "store", "dry", "v")
	require.NoError(t, err)
	_, err = ctl("get", "dry")
	assert.ErrorContains(t, err, "code = NotFound")
	_, err = ctl("-token", "nobody", "get", "gopher")
	assert.ErrorContains(t, err, "code = Unauthenticated")

	// stats reads every admin port: the replicas hold gopher's 4 keys
	// between them (the dry run stored nothing).
	out, err = ctl("-admin", strings.Join(append([]string{st.AccountsAdmin}, st.CacheAdmins...), ","), "stats")
	require.NoError(t, err)
	assert.Contains(t, out, "== accounts accounts ("+st.AccountsAdmin+")")
	keys := 0
	for i, a := range st.CacheAdmins {
		assert.Contains(t, out, fmt.Sprintf("== cache cache-%d (%s)", i+1, a))
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "keys" {
			n, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			keys += n
		}
	}
	assert.Equal(t, 4, keys, out)
	_, err = ctl("-admin", "127.0.0.1:1", "stats")
	assert.ErrorContains(t, err, "is the server's admin port there?")

	_, err = ctl("frobnicate")
	var u usageError
	assert.True(t, errors.As(err, &u), "bad usage exits 2: %v", err)
}

// The README says -h lists every variable; cachectl used to print only
// "flag: help requested" and exit 2.
func TestHelpListsEveryFlagWithItsVariable(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"-h"}, &out)
	require.ErrorIs(t, err, flag.ErrHelp)
	var u usageError
	assert.False(t, errors.As(err, &u), "-h is not bad usage")
	for _, v := range []string{"CACHECTL_ADDR", "CACHECTL_TOKEN", "CACHECTL_CA", "CACHECTL_TIMEOUT", "CACHECTL_DRY_RUN", "CACHECTL_V"} {
		assert.Contains(t, out.String(), "$"+v)
	}
	assert.True(t, strings.HasPrefix(out.String(), usage+"\n"), out.String())
}

func TestCachectlBatches(t *testing.T) {
	st, err := devstack.Start(devstack.Config{
		CertDir:      t.TempDir(),
		AccountsAddr: "127.0.0.1:0",
		CacheAddrs:   []string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(st.Stop)
	ctl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(append([]string{"-addr", st.Target(), "-ca", st.CA, "-timeout", "10s"}, args...), &out)
		return out.String(), err
	}

	out, err := ctl("mset", "a=1", "b=2", "c=3")
	require.NoError(t, err)
	assert.Equal(t, "Stored a\nStored b\nStored c\n", out)
	out, err = ctl("mget", "c", "nope", "a")
	assert.ErrorContains(t, err, "mget: 1 of 3 keys failed")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Equal(t, "c\t3", lines[0])
	assert.Contains(t, lines[1], "nope\t! code = NotFound")
	assert.Equal(t, "a\t1", lines[2])

	out, err = ctl("-token", "gopher", "-dry-run", "mset", "w=1", "x=1", "y=1", "z=1")
	require.NoError(t, err)
	assert.Equal(t, "Would store w\nWould store x\nWould store y\nWould store z\n", out)
	out, err = ctl("-token", "gopher", "mset", "w=1", "x=1", "y=1", "z=1")
	assert.ErrorContains(t, err, "mset: 1 of 4 items failed", "gopher may hold 3 keys")
	assert.Contains(t, out, "code = FailedPrecondition")
	assert.Equal(t, 3, strings.Count(out, "Stored "), out)

	_, err = ctl("mset", "novalue")
	var u usageError
	assert.True(t, errors.As(err, &u), "bad usage exits 2: %v", err)
}
