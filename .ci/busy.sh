#!/usr/bin/env bash
# The suites with deadlines, run while the machine is kept busy: no test may
# depend on the machine's speed (tests wait for states and compare orders).
#
#   .ci/busy.sh              every step, final/server, final's fault tests,
#                            final/client and the README tests, 3 rounds in a
#                            row under a CPU hog of 4 busy loops per core,
#                            stopping at the first failure
#   .ci/busy.sh -ci          the bounded subset CI runs (one round, a few
#                            minutes): the deadline, cap and retry tests of
#                            steps 06-11, final/server's bad-input and
#                            deadline tests, step 08's and 09's READMEs
#
# Options: -rounds N, -hogs N (busy loops; default 4 × nproc), -norace (the
# default is -race, as in CI). The test binaries are compiled first, before
# the hog starts: what runs under load is the tests, not the compiler.
# BUSY_LOCK=FILE runs the README tests (fixed ports) under flock FILE, for a
# machine shared with others who run them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

rounds=3 hogs=$((4 * $(nproc))) race=-race ci=
while [ $# -gt 0 ]; do
  case $1 in
  -rounds) rounds=$2; shift ;;
  -hogs) hogs=$2; shift ;;
  -norace) race= ;;
  -ci) ci=1; rounds=1 ;;
  *) echo "usage: .ci/busy.sh [-ci] [-rounds N] [-hogs N] [-norace]" >&2; exit 2 ;;
  esac
  shift
done

# The fault tests live in final/faulttest or final/internal/faulttest.
faulttest=final/faulttest
[ -d "$faulttest" ] || faulttest=final/internal/faulttest
# SUITES: package directory and -test.run pattern ("" for all).
declare -a dirs runs
suite() { dirs+=("$1"); runs+=("${2:-}"); }
if [ -n "$ci" ]; then
  for s in step06-* step07-* step08-* step09-* step10-* step11-*; do
    suite "$s" 'Deadline|Cap|GivesUp|Retr|Slow'
  done
  suite final/server 'BadInput|Deadline'
  readmes='TestREADMEs/step0[89]'
else
  for s in step[0-9][0-9]-*; do suite "$s"; done
  suite final/server
  suite "$faulttest"
  suite final/client
  readmes=TestREADMEs
fi
suite internal/readmetest "$readmes"

tmp=$(mktemp -d)
hog_pids=()
cleanup() {
  for p in "${hog_pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "busy: compiling ${#dirs[@]} test binaries ${race:+with $race }(before the hog starts)"
pkgs=()
for d in "${dirs[@]}"; do pkgs+=("./$d"); done
go test -c $race -o "$tmp/" "${pkgs[@]}"
# The README tests build the workshop's binaries themselves: warm the cache.
go build -o "$tmp/warm/" ./final/cmd/... ./why-grpc ./step[0-9][0-9]-*
rm -rf "$tmp/warm"

echo "busy: starting $hogs busy loops on $(nproc) cores"
for _ in $(seq "$hogs"); do
  bash -c 'while :; do :; done' &
  hog_pids+=($!)
done

for round in $(seq "$rounds"); do
  for i in "${!dirs[@]}"; do
    d=${dirs[$i]} run=${runs[$i]}
    bin="$tmp/$(basename "$d").test"
    args=(-test.count=1 -test.timeout=30m)
    [ -n "$run" ] && args+=(-test.run "$run")
    lock=()
    env=()
    if [ "$d" = internal/readmetest ]; then
      env=(README_TESTS=1)
      [ -n "${BUSY_LOCK:-}" ] && lock=(flock "$BUSY_LOCK")
    fi
    start=$(date +%s)
    if (cd "$d" && env "${env[@]}" "${lock[@]}" "$bin" "${args[@]}") >"$tmp/out" 2>&1; then
      echo "busy: round $round/$rounds: ok   $d${run:+ (-run '$run')} $(($(date +%s) - start))s  (load $(cut -d' ' -f1 /proc/loadavg))"
    else
      echo "busy: round $round/$rounds: FAIL $d${run:+ (-run '$run')} after $(($(date +%s) - start))s:"
      grep -E -- '^(---|===|FAIL|panic|\s+\S+_test\.go:[0-9]+:|\s+Error)' "$tmp/out" | grep -v -- '^=== \(RUN\|PAUSE\|CONT\)' | head -60 || true
      tail -40 "$tmp/out"
      exit 1
    fi
  done
done
echo "busy: passed: $rounds round(s) of ${#dirs[@]} suites under $hogs busy loops on $(nproc) cores"
