package readmetest

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"grpcworkshop.example/final/readmetest"
)

// workshop is the root README and each step's README, each one script run
// in a fresh directory with final/ and the steps linked in (so that paths
// such as final/clients/python/cachectl.py work), against final's commands,
// why-grpc and every step built once.
func workshop(t *testing.T) readmetest.Suite {
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)
	steps, err := filepath.Glob(filepath.Join(repo, "step[0-9][0-9]-*"))
	require.NoError(t, err)
	require.NotEmpty(t, steps)
	s := readmetest.Suite{
		Dir:     repo,
		Scripts: [][]string{{"README.md"}},
		Build:   []string{"./final/cmd/...", "./why-grpc"},
		Link:    []string{"final"},
		Ports:   append([]int{5054, 5061}, readmetest.DevstackPorts...),
	}
	for _, st := range steps {
		st = filepath.Base(st)
		s.Scripts = append(s.Scripts, []string{st + "/README.md"})
		s.Build = append(s.Build, "./"+st)
		s.Link = append(s.Link, st)
	}
	return s
}

// TestREADMEs runs the workshop's READMEs, then final's README and docs
// from final's directory (TestREADMEs/final/README.md).
func TestREADMEs(t *testing.T) {
	readmetest.Run(t, workshop(t))
	t.Run("final", func(t *testing.T) { readmetest.Run(t, readmetest.Module(t, "../../final")) })
}

// TestEveryREADMEsMarkersParse: final's own test checks final's.
func TestEveryREADMEsMarkersParse(t *testing.T) { readmetest.CheckMarkers(t, workshop(t)) }
