#!/usr/bin/env bash
# final is a starter: make a new service from it with the documented command
# (final/starter.sh) under another module path, rename its service and proto
# package with the recipe in final/docs/starter.md (rpc.Cache -> kv.v1.Kv),
# and run the copy's own CI (generation, vet, buf, go test -race ./...,
# console bundle) there, outside this repository and its go.work.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
start=$(date +%s)

final/starter.sh example.com/acme/kv "$tmp/kv"
# The rename recipe, exactly as docs/starter.md shows it.
recipe=$(awk '/<!-- rename-recipe/ {on=1; next} on && /^```sh$/ {in_=1; next} in_ && /^```$/ {exit} in_ {print}' final/docs/starter.md)
[ -n "$recipe" ] || { echo "final/docs/starter.md: no rename recipe block" >&2; exit 1; }
(cd "$tmp/kv" && bash -euo pipefail -c "$recipe")

# The copy refers to nothing of the workshop.
if grep -rn --exclude-dir=node_modules -e 'grpcworkshop\.example' -e '\.\./\.\./\.\.' "$tmp/kv" --include='*.go' --include='*.sh' --include='*.mod' --include='Dockerfile*'; then
  echo "the copy still names the workshop's module or layout" >&2; exit 1
fi
grep -q '^package kv.v1;' "$tmp/kv/rpc/cache.proto" && grep -q 'Kv_ServiceDesc' "$tmp/kv/rpc/cache_grpc.pb.go"

cd "$tmp/kv"
GOFLAGS= ./ci.sh
echo "starter: made, renamed and tested a copy in $(($(date +%s) - start))s"
