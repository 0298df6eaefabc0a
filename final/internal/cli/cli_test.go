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
)

type conf struct {
	TTL, Other time.Duration
	Rate       float64
	Name       string
	Verbose    bool
}

func bind(fs *flag.FlagSet, c *conf) {
	f := New(fs, "TEST_")
	f.Duration(&c.TTL, "auth-ttl", "ttl")
	f.Duration(&c.Other, "other-unset-for-sure", "other")
	f.Float(&c.Rate, "rate", "rate")
	f.String(&c.Name, "name", "name")
	f.Bool(&c.Verbose, "v", "verbose")
}

func TestEnvNamesArePrefixedFlagNames(t *testing.T) {
	assert.Equal(t, "CACHE_LOG_LEVEL", New(nil, "CACHE_").EnvName("log-level"))
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	bind(fs, &conf{})
	assert.True(t, strings.HasSuffix(fs.Lookup("auth-ttl").Usage, "($TEST_AUTH_TTL)"), "-h lists the variable")
}

func TestEnvironmentGivesFlagDefaults(t *testing.T) {
	t.Setenv("TEST_AUTH_TTL", "7s")
	t.Setenv("TEST_RATE", "12.5")
	t.Setenv("TEST_V", "true")
	c := conf{TTL: time.Second, Other: time.Minute, Rate: 1, Name: "n"}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	bind(fs, &c)
	require.NoError(t, Parse(fs, []string{"-rate", "0"}))
	assert.Equal(t, 7*time.Second, c.TTL)
	assert.Equal(t, 0.0, c.Rate, "a flag given overrides the environment, and 0 is 0")
	assert.Equal(t, time.Minute, c.Other, "unset: the config's default")
	assert.Equal(t, "n", c.Name)
	assert.True(t, c.Verbose)
	assert.Equal(t, "7s", fs.Lookup("auth-ttl").DefValue, "-h shows the default in effect")
}

func TestBadEnvironmentValueIsAStartupErrorNamingTheVariable(t *testing.T) {
	for _, tc := range []struct {
		env, val, flag string // flag=value: a good value for the flag
	}{
		{"TEST_AUTH_TTL", "abc", "-auth-ttl=2s"},
		{"TEST_AUTH_TTL", "5", "-auth-ttl=2s"},
		{"TEST_RATE", "xyz", "-rate=2"},
		{"TEST_RATE", "", "-rate=2"},
		{"TEST_V", "yes please", "-v"},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			for _, args := range [][]string{nil, {tc.flag}} {
				var out bytes.Buffer
				fs := flag.NewFlagSet("test", flag.ContinueOnError)
				fs.SetOutput(&out)
				bind(fs, &conf{})
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
