#!/usr/bin/env bash
# Regenerates the Python stubs from final's cache.proto with Debian's
# python3-grpc-tools (PyPI is not needed).
set -euo pipefail
cd "$(dirname "$0")"
py=/usr/bin/python3
"$py" -c 'import grpc_tools' 2>/dev/null || { echo "grpc_tools not found: apt-get install python3-grpc-tools" >&2; exit 1; }
"$py" -m grpc_tools.protoc -I ../../rpc --python_out=. --grpc_python_out=. cache.proto
echo "generated final/clients/python"
