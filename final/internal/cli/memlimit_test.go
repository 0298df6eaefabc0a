package cli

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemoryLimitRespectsGOMEMLIMITAndRefusesABadRatio(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	prev := debug.SetMemoryLimit(123 << 20)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	t.Setenv("GOMEMLIMIT", "123MiB") // as the runtime read it at start
	got, err := MemoryLimit(0.5, quiet, slog.LevelInfo)
	require.NoError(t, err)
	assert.EqualValues(t, 123<<20, got, "GOMEMLIMIT wins over the ratio")

	t.Setenv("GOMEMLIMIT", "")
	got, err = MemoryLimit(0, quiet, slog.LevelInfo)
	require.NoError(t, err)
	assert.EqualValues(t, 123<<20, got, "ratio 0 leaves the limit alone")

	for _, bad := range []float64{-0.1, 1.5} {
		_, err = MemoryLimit(bad, quiet, slog.LevelInfo)
		assert.Error(t, err, "ratio %v", bad)
	}
}
