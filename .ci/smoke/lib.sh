# Helpers for the smoke scripts: build a step, start its servers in the
# background, run its client and check what it prints.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SMOKE_TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$SMOKE_TMP"
}
trap cleanup EXIT

# build PKG: builds ./PKG into $SMOKE_TMP/PKG and prints its path.
build() { go build -o "$SMOKE_TMP/$1" "./$1" && echo "$SMOKE_TMP/$1"; }

# start NAME PORT CMD...: runs CMD in the background and waits for PORT (up to
# a minute: a busy machine starts a process slowly).
start() {
  local name=$1 port=$2; shift 2
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: something else would answer for $name"; return 1
  fi
  "$@" >"$SMOKE_TMP/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not listen on $port:"; cat "$SMOKE_TMP/$name.log"; return 1
}

# expect WANT CMD...: runs CMD, requires success and WANT in its output.
expect() {
  local want=$1; shift
  local out
  if ! out=$("$@" 2>&1); then echo "FAIL: $* exited non-zero:"; echo "$out"; return 1; fi
  if ! grep -qF -- "$want" <<<"$out"; then echo "FAIL: $* printed:"; echo "$out"; echo "want: $want"; return 1; fi
  echo "ok: $* -> $want"
}

# expect_fail WANT CMD...: runs CMD, requires failure and WANT in its output.
expect_fail() {
  local want=$1; shift
  local out
  if out=$("$@" 2>&1); then echo "FAIL: $* succeeded:"; echo "$out"; return 1; fi
  if ! grep -qF -- "$want" <<<"$out"; then echo "FAIL: $* printed:"; echo "$out"; echo "want: $want"; return 1; fi
  echo "ok: $* fails with $want"
}
