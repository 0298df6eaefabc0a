package client

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The client is what other programs link to call the service: it must not
// drag in the server, its storage (bbolt, etcd) or their dependencies. The
// server's packages are named relative to this module, so the test holds
// in every service made from final.
func TestTheClientLinksNothingOfTheServer(t *testing.T) {
	// go test puts its own go first in PATH.
	out, err := exec.Command("go", "list", "-f", "{{.Module.Path}}", ".").Output()
	require.NoError(t, err, "go list: %s", stderr(err))
	mod := strings.TrimSpace(string(out))
	out, err = exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err, "go list -deps: %s", stderr(err))

	server := []string{"accounts", "accountsclient", "admission", "auth", "forward", "interceptor", "ratelimit", "server", "web"}
	for _, dep := range strings.Fields(string(out)) {
		require.False(t, strings.HasPrefix(dep, "go.etcd.io/"), "the client links %s (etcd or bbolt)", dep)
		rel, ok := strings.CutPrefix(dep, mod+"/")
		if !ok {
			continue
		}
		for _, s := range server {
			require.False(t, rel == s || strings.HasPrefix(rel, s+"/"), "the client links %s, a package of the server", dep)
		}
	}
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
