#!/usr/bin/env bash
# Regenerates the Python stubs from the service's rpc/cache.proto with Debian's
# python3-grpc-tools (PyPI is not needed). cache.proto imports the
# google/api protos (its HTTP annotations); their stubs are generated here
# too, from the genproto module pinned in go.mod, because Debian packages no
# Python googleapis-common-protos.
set -euo pipefail
cd "$(dirname "$0")"
py=/usr/bin/python3
"$py" -c 'import grpc_tools' 2>/dev/null || { echo "grpc_tools not found: apt-get install python3-grpc-tools" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd ../.. && GOWORK=off go run ./internal/protodeps "$tmp/googleapis.binpb")
# Debian's grpc_tools protoc takes either -I or --descriptor_set_in, not
# both: Debian's protoc joins them into one self-contained set first.
protoc -I ../../rpc --descriptor_set_in="$tmp/googleapis.binpb" --include_imports \
  --descriptor_set_out="$tmp/all.binpb" cache.proto
# (grpc_tools.protoc's own main adds an -I, so call its compiler directly.)
"$py" -c 'import sys; from grpc_tools import protoc; sys.exit(protoc.main(sys.argv))' \
  --descriptor_set_in="$tmp/all.binpb" --python_out=. --grpc_python_out=. \
  cache.proto google/api/annotations.proto google/api/http.proto google/api/httpbody.proto \
  google/rpc/status.proto
rm -f google/api/*_pb2_grpc.py google/rpc/*_pb2_grpc.py # messages only: no services there
echo "generated clients/python"
