#!/usr/bin/env bash
# Makes a new service from this one with Go's template tool, gonew
# (golang.org/x/tools/cmd/gonew, pinned by tools.mod): every file git tracks
# here, under NEWMODULE, with the imports rewritten, in DIR (default: the
# module path's last element, as gonew does).
#
#   ./starter.sh example.com/acme/kv ../kv
#
# gonew downloads its template through the Go module proxy. final is not
# published to one, so this script serves it from a temporary file-based
# proxy (GOPROXY=file://...: a module zip built by golang.org/x/mod/zip,
# with its .info, .mod and list) and runs gonew against that. Once the
# template is published, the same thing is one command: see docs/starter.md.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 NEWMODULE [DIR]" >&2; exit 2; }
newmod=$1
dir=${2:-$(basename "$newmod")}
case $dir in /*) ;; *) dir="$PWD/$dir" ;; esac
[ ! -e "$dir" ] || { echo "$dir already exists" >&2; exit 1; }
cd "$(dirname "$0")"
export GOWORK=off
command -v git >/dev/null && git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  { echo "starter.sh lists the template's files with git: run it in a git checkout" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
# The files of the template: what git tracks (and new files not ignored),
# so that build outputs, .dev/ and node_modules/ stay behind.
mapfile -d '' files < <(git ls-files -z --cached --others --exclude-standard -- . | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done)
version=v0.0.0
mod=$(go run -modfile=tools.mod internal/starter/mkproxy.go "$tmp/proxy" "$version" "${files[@]}")
# Only this module comes from the file proxy, unverified by the checksum
# database (it is not public); gonew downloads nothing else. A module cache
# of its own keeps this version of the template from being cached for good.
gonew=$(go tool -modfile=tools.mod -n gonew)
GOPROXY="file://$tmp/proxy" GONOSUMDB="$mod" GOFLAGS=-modcacherw GOMODCACHE="$tmp/modcache" \
  "$gonew" "$mod@$version" "$newmod" "$dir"
# gonew rewrites import paths in place; gofmt sorts them again.
find "$dir" -name '*.go' -not -path '*/node_modules/*' -print0 | xargs -0 gofmt -w
# A module zip keeps no file modes: the scripts are made executable again.
find "$dir" -name '*.sh' -exec chmod +x {} +
echo "next: cd $dir && ./ci.sh  (docs/starter.md: what to rename first)"
