#!/usr/bin/env bash
# buf lint and buf breaking for final's protos (buf.yaml). cache.proto
# imports google/api protos (its HTTP annotations), which buf alone would
# fetch from a registry; instead protoc builds the image with them, from
# the genproto module pinned in go.mod (internal/protodeps), and buf checks
# only final's own files. `./buf.sh release` refreshes rpc/released.binpb.
set -euo pipefail
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd .. && go run ./final/internal/protodeps "$tmp/googleapis.binpb")
protos=(rpc/cache.proto rpc/accounts.proto)
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
# TOOLS_BIN (set by .ci/run): the pinned tools, already built for this run.
buf=(go tool buf)
[ -n "${TOOLS_BIN:-}" ] && buf=("$TOOLS_BIN/buf")
"${buf[@]}" lint "$tmp/image.binpb" "${paths[@]}"
"${buf[@]}" breaking "$tmp/image.binpb" "${paths[@]}" --against rpc/released.binpb
echo "buf lint and buf breaking: ok"
