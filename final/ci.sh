#!/usr/bin/env bash
# The service's own CI, the same in final and in every service made from it:
# formatting, vet, generated code fresh (Go, Python, the console's
# TypeScript and bundle), buf lint and breaking, every test under -race,
# and the README tests (README.md's and docs/*.md's console blocks, run).
#
#   ./ci.sh            # everything
#   CI_SKIP_CONSOLE=1 ./ci.sh   # without Node (the console's check is skipped)
#   CI_SKIP_READMES=1 ./ci.sh   # without the README tests (they use devstack's
#                               # fixed ports: never two at once on one machine)
set -euo pipefail
cd "$(dirname "$0")"
export GOWORK=off # this module alone, as in a service made from it

echo "== gofmt"
unformatted=$(find . -name '*.go' -not -path '*/node_modules/*' -print0 | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== generated code is fresh"
generated=(rpc clients/python web/console/src/gen web/dist)
snapshot() { find "${generated[@]}" -type f -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum; }
before=$(snapshot)
./generate.sh >/dev/null
if [ "${CI_SKIP_CONSOLE:-}" = 1 ]; then
  echo "the console's bundle: not checked (CI_SKIP_CONSOLE=1)"
else
  command -v node >/dev/null || { echo "node not found (Node 20 or later; CI_SKIP_CONSOLE=1 skips the console)" >&2; exit 1; }
  (cd web/console && npm ci --no-audit --no-fund --loglevel=error && ./build.sh >/dev/null)
fi
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "generate.sh or web/console/build.sh changed generated files: regenerate and commit"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi

echo "== buf lint and buf breaking"
./buf.sh

echo "== tests"
go test -race ${CI_TEST_FLAGS:-} ./...

echo "== README tests: every console block of README.md and docs/*.md, run"
if [ "${CI_SKIP_READMES:-}" = 1 ]; then
  echo "the README tests: not run (CI_SKIP_READMES=1)"
else
  README_TESTS=1 go test -count=1 -timeout 20m -run TestREADMEs ./readmetest/
fi
echo "ci: ok"
