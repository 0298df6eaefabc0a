package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireBrowser is set by .ci/browser.sh: there a missing tool fails the
// test instead of skipping it.
const requireBrowser = "CONSOLE_BROWSER_TEST"

// TestConsoleInChromium drives the web console in a real Chromium through
// playwright-core (console/test/console.test.mjs) against three replicas:
// store, get, a Dump of 1,000 keys streaming in, a quota refusal with its
// limit, an unknown token. It needs Node, Debian's chromium and `npm ci`
// in console/; without them it skips, so go test ./... needs neither.
// SCREENSHOT=path saves a picture of the console.
func TestConsoleInChromium(t *testing.T) {
	node, err := exec.LookPath("node")
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	missing := ""
	switch {
	case err != nil:
		missing = "node is not installed"
	case fileMissing(chromium):
		missing = chromium + " is missing (apt-get install chromium)"
	case fileMissing("console/node_modules/playwright-core/package.json"):
		missing = "console/node_modules is missing (npm ci in final/web/console)"
	}
	if missing != "" {
		if os.Getenv(requireBrowser) != "" {
			t.Fatalf("browser test required (%s is set) but %s", requireBrowser, missing)
		}
		t.Skipf("browser test skipped: %s; .ci/browser.sh runs it", missing)
	}

	st := startWeb(t, 3, nil)
	const bulk = 1000
	storeN(t, st.WebURLs[0], "bulk", bulk)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", filepath.Join("test", "console.test.mjs"))
	cmd.Dir = "console"
	cmd.Env = append(os.Environ(), "CONSOLE_URL="+st.WebURLs[0]+"/", "CHROMIUM="+chromium,
		"CONSOLE_BULK_KEYS="+strconv.Itoa(bulk))
	if shot := os.Getenv("SCREENSHOT"); shot != "" {
		abs, err := filepath.Abs(shot)
		require.NoError(t, err)
		cmd.Env = append(cmd.Env, "SCREENSHOT="+abs)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("playwright:\n%s", out)
	require.NoError(t, err, "the console test failed")
}

func fileMissing(path string) bool {
	_, err := os.Stat(path)
	return err != nil
}
