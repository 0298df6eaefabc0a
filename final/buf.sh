#!/usr/bin/env bash
# buf lint and buf breaking for the service's protos (buf.yaml). cache.proto
# imports google/api protos (its HTTP annotations), which buf alone would
# fetch from a registry; instead protoc builds the image with them, from
# the genproto module pinned in go.mod (internal/protodeps), and buf checks
# only the service's own files. buf is pinned by tools.mod.
# `./buf.sh release` refreshes rpc/released.binpb.
set -euo pipefail
cd "$(dirname "$0")"
export GOWORK=off
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go run ./internal/protodeps "$tmp/googleapis.binpb"
protos=(rpc/*.proto)
paths=()
for p in "${protos[@]}"; do paths+=(--path "$p"); done
if [ "${1:-}" = release ]; then
  protoc -I . --descriptor_set_in="$tmp/googleapis.binpb" --include_imports \
    --descriptor_set_out=rpc/released.binpb "${protos[@]}"
  echo "wrote rpc/released.binpb"
  exit 0
fi
protoc -I . --descriptor_set_in="$tmp/googleapis.binpb" --include_imports --include_source_info \
  --descriptor_set_out="$tmp/image.binpb" "${protos[@]}"
go tool -modfile=tools.mod buf lint "$tmp/image.binpb" "${paths[@]}"
go tool -modfile=tools.mod buf breaking "$tmp/image.binpb" "${paths[@]}" --against rpc/released.binpb
echo "buf lint and buf breaking: ok"
