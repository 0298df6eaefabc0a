#!/usr/bin/env bash
# CI: the web console. Installs its pinned tools (npm ci), rebuilds the
# bundle and the generated TypeScript and fails if they differ from what is
# checked in (as for Go code), then drives the console in Debian's Chromium
# against three replicas (final/web/browser_test.go).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "node not found (Node 20 or later)" >&2; exit 1; }
# playwright-core needs Node 20 (Debian 12's nodejs is 18: use NodeSource or Debian 13).
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "node $(node --version) is too old: the console's tools need Node 20 or later" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "/usr/bin/chromium not found: apt-get install chromium" >&2; exit 1; }

(cd final/web/console && npm ci --no-audit --no-fund --loglevel=error && ./build.sh)
if [ -n "$(git status --porcelain final/web)" ]; then
  echo "the console's bundle or generated code is stale: run final/web/console/build.sh and commit"
  git status --porcelain final/web; git diff --stat final/web; exit 1
fi
CONSOLE_BROWSER_TEST=1 go test -race -count=1 -run 'TestConsoleInChromium' -v ./final/web/
