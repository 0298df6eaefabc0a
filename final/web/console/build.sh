#!/usr/bin/env bash
# Builds the web console into ../dist, which is checked in and embedded by
# the Go server: TypeScript code generated from cache.proto by protoc-gen-es,
# type-checked by tsc, bundled by esbuild. Every tool is pinned by
# package-lock.json (run `npm ci` first); the googleapis protos come from
# the genproto module pinned by go.mod, as for ../../generate.sh. CI runs this
# and fails if ../dist or src/gen changed.
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/esbuild ] || { echo "node_modules missing: run npm ci in $(pwd)" >&2; exit 1; }
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd ../.. && GOWORK=off go run ./internal/protodeps "$tmp/googleapis.binpb")

rm -rf src/gen && mkdir -p src/gen
protoc -I ../../rpc --descriptor_set_in="$tmp/googleapis.binpb" \
  --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es \
  --es_out=src/gen --es_opt=target=ts \
  cache.proto google/api/annotations.proto google/api/http.proto google/api/httpbody.proto \
  google/rpc/error_details.proto google/rpc/status.proto

node_modules/.bin/tsc --noEmit -p .

rm -rf ../dist && mkdir -p ../dist
node_modules/.bin/esbuild src/main.ts --bundle --minify --format=esm --target=es2022 \
  --legal-comments=none --outfile=../dist/console.js --log-level=warning
cp index.html style.css ../dist/
echo "built web/dist"
