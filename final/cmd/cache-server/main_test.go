package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBadEnvironmentValueStopsStartup(t *testing.T) {
	for env, val := range map[string]string{"CACHE_AUTH_TTL": "abc", "CACHE_RATE": "xyz"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, val)
			err := run([]string{"-addr", "127.0.0.1:0"})
			require.Error(t, err)
			require.Contains(t, err.Error(), "$"+env)
		})
	}
}

func TestEveryFlagHasAPrefixedVariable(t *testing.T) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("cache-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.bind(fs)
	fs.VisitAll(func(f *flag.Flag) {
		env := "CACHE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		assert.True(t, strings.HasSuffix(f.Usage, "($"+env+")"), "-%s: %s", f.Name, f.Usage)
	})
	t.Setenv("CACHE_LOG_LEVEL", "warn")
	t.Setenv("CACHE_RATE", "0")
	cfg = defaultConfig()
	fs = flag.NewFlagSet("cache-server", flag.ContinueOnError)
	cfg.bind(fs)
	require.NoError(t, fs.Parse(nil))
	assert.Equal(t, "warn", cfg.LogLevel)
	assert.Zero(t, cfg.Limits.Rate, "0 means no limit, in the struct as on the command line")
	t.Setenv("LOG_LEVEL", "error") // a host's unprefixed variable is not ours
	cfg = defaultConfig()
	fs = flag.NewFlagSet("cache-server", flag.ContinueOnError)
	cfg.bind(fs)
	require.NoError(t, fs.Parse(nil))
	assert.Equal(t, "warn", cfg.LogLevel)
}

func TestMalformedOriginStopsStartup(t *testing.T) {
	err := run([]string{"-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-cors-origins", "console.example.com/app"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-cors-origins")
	assert.Contains(t, err.Error(), "scheme://host[:port]")
}
