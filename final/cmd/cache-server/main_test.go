package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBadEnvironmentValueStopsStartup(t *testing.T) {
	for env, val := range map[string]string{"AUTH_TTL": "abc", "RATE": "xyz"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, val)
			err := run([]string{"-addr", "127.0.0.1:0"})
			require.Error(t, err)
			require.Contains(t, err.Error(), "$"+env)
		})
	}
}
