package cli

import (
	"bytes"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

func TestLimitZeroMeansNoLimit(t *testing.T) {
	l, b := Limit(0, 0.1)
	assert.Equal(t, rate.Inf, l)
	assert.Zero(t, b)

	l, b = Limit(5000, 0.1)
	assert.Equal(t, rate.Limit(5000), l)
	assert.Equal(t, 500, b)

	_, b = Limit(2, 0.1)
	assert.Equal(t, 1, b, "a burst of at least one call")
}

func TestEnvironmentGivesFlagDefaults(t *testing.T) {
	t.Setenv("TEST_TTL", "7s")
	t.Setenv("TEST_RATE", "12.5")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	ttl := Duration(fs, "ttl", "TEST_TTL", time.Second, "ttl")
	r := Float(fs, "rate", "TEST_RATE", 1, "rate")
	unset := Duration(fs, "other", "TEST_UNSET_FOR_SURE", time.Minute, "other")
	require.NoError(t, Parse(fs, []string{"-rate", "3"}))
	assert.Equal(t, 7*time.Second, *ttl)
	assert.Equal(t, 3.0, *r, "a flag given overrides the environment")
	assert.Equal(t, time.Minute, *unset)
}

func TestBadEnvironmentValueIsAStartupErrorNamingTheVariable(t *testing.T) {
	for _, tc := range []struct {
		env, val, flag string // flag=value: a good value for the flag
		define         func(*flag.FlagSet)
	}{
		{"AUTH_TTL", "abc", "-auth-ttl=2s", func(fs *flag.FlagSet) { Duration(fs, "auth-ttl", "AUTH_TTL", time.Second, "ttl") }},
		{"AUTH_TTL", "5", "-auth-ttl=2s", func(fs *flag.FlagSet) { Duration(fs, "auth-ttl", "AUTH_TTL", time.Second, "ttl") }},
		{"RATE", "xyz", "-rate=2", func(fs *flag.FlagSet) { Float(fs, "rate", "RATE", 1, "rate") }},
		{"RATE", "", "-rate=2", func(fs *flag.FlagSet) { Float(fs, "rate", "RATE", 1, "rate") }},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			for _, args := range [][]string{nil, {tc.flag}} {
				var out bytes.Buffer
				fs := flag.NewFlagSet("test", flag.ContinueOnError)
				fs.SetOutput(&out)
				tc.define(fs)
				err := Parse(fs, args)
				require.Error(t, err, "args %q", args)
				assert.Contains(t, err.Error(), fmt.Sprintf("invalid value %q for $%s", tc.val, tc.env))
				assert.Contains(t, err.Error(), strings.Split(tc.flag, "=")[0])
				assert.Contains(t, out.String(), err.Error(), "printed like a flag error, with the usage")
				assert.Contains(t, out.String(), "Usage of test")
				assert.NotContains(t, out.String(), "panic")
			}
		})
	}
}
