#!/usr/bin/env bash
# Regenerates every checked-in *.pb.go from its .proto.
# protoc comes from Debian's protobuf-compiler; the Go plugins are pinned by
# go.mod's tool directives, so everyone generates byte-identical code.
set -euo pipefail
cd "$(dirname "$0")"

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

module=$(cd . && GOWORK=off go list -m)
final_module=$(cd final && GOWORK=off go list -m)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
# TOOLS_BIN (set by .ci/run): the pinned tools, already built for this run.
if [ -n "${TOOLS_BIN:-}" ]; then
  cp "$TOOLS_BIN/protoc-gen-go" "$TOOLS_BIN/protoc-gen-go-grpc" "$bin/"
else
  go build -o "$bin" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
fi
# google/api/*.proto (final's HTTP annotations) come from the genproto module
# pinned in go.mod, as a descriptor set: nothing copied into the repository.
go run ./final/internal/protodeps "$bin/googleapis.binpb"

# Every directory that holds .proto files is one Go package; the import path
# is set here, not in the .proto, so app.proto stays identical across steps.
find . -name '*.proto' -not -path './final/clients/*' -printf '%h\n' | sort -u | while read -r dir; do
  dir=${dir#./}
  pkg="$module/$dir"
  # final is a module of its own (grpcworkshop.example/final).
  case $dir in final/*) pkg="$final_module/${dir#final/}" ;; esac
  protos=$(cd "$dir" && ls *.proto)
  mopts=()
  for p in $protos; do mopts+=("--go_opt=M$p=$pkg" "--go-grpc_opt=M$p=$pkg"); done
  (cd "$dir" && protoc -I . --descriptor_set_in="$bin/googleapis.binpb" \
    --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
    --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    "${mopts[@]}" $protos)
  echo "generated $dir"
done

if [ -x final/clients/python/generate.sh ]; then final/clients/python/generate.sh; fi
