# Timed sections for .ci/run (sourced). A section is one line:
#
#   section NAME CMD...      runs CMD (a command or a shell function, with
#                            set -e in force) and prints "== NAME" before and
#                            "-- NAME: ok in 1m02s" or "FAILED" after; a
#                            failure ends the run
#   background NAME CMD...   the same, beside the sections that follow: its
#                            output is kept and printed at join_background
#   join_background          waits for the background sections, prints their
#                            output and times, and ends the run if one failed
#
# A section still running after a minute says so every minute (a long
# silence looks like a hang). At the end (or at the first failure) the run
# prints every section's time.

CI_TMP=$(mktemp -d)
CI_T0=$(date +%s)
CI_TIMES=()
BG_PIDS=() BG_NAMES=()
HEARTBEAT=

ci_cleanup() {
  [ -n "$HEARTBEAT" ] && kill "$HEARTBEAT" 2>/dev/null
  for p in "${BG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  rm -rf "$CI_TMP"
  return 0
}
trap ci_cleanup EXIT

# dur SECONDS: 42s, 3m07s.
dur() { if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi; }

# stamp: prefixes each line with the time since the run started, for the
# progress lines of long sections (go test's per-package results).
stamp() {
  local line
  while IFS= read -r line; do printf '[%s] %s\n' "$(dur $(($(date +%s) - CI_T0)))" "$line"; done
}

ci_summary() {
  echo "== section times (total $(dur $(($(date +%s) - CI_T0))))"
  printf '%s\n' "${CI_TIMES[@]}"
}

# _ended NAME SECONDS STATUS [where]: records and prints a section's end.
_ended() {
  local d; d=$(dur "$2")
  CI_TIMES+=("$(printf '%9s  %s%s' "$d" "$1" "${4:-}")")
  if [ "$3" -eq 0 ]; then
    echo "-- $1: ok in $d"
  else
    echo "-- $1: FAILED (exit $3) after $d"
  fi
}

section() {
  local name=$1; shift
  local start rc=0
  start=$(date +%s)
  echo "== $name"
  (
    while sleep 60; do echo "   ... $name: still running, $(dur $(($(date +%s) - start))) so far"; done
  ) &
  HEARTBEAT=$!
  # In the background, then waited for: a function run as the left of ||
  # would run with set -e off.
  "$@" &
  wait $! || rc=$?
  kill "$HEARTBEAT" 2>/dev/null; wait "$HEARTBEAT" 2>/dev/null || true
  HEARTBEAT=
  _ended "$name" $(($(date +%s) - start)) "$rc"
  if [ "$rc" -ne 0 ]; then ci_summary; exit "$rc"; fi
}

background() {
  local name=$1; shift
  local id=${#BG_PIDS[@]}
  echo "== $name: started in the background (its output follows when it ends)"
  (
    start=$(date +%s) rc=0
    "$@" >"$CI_TMP/bg$id.log" 2>&1 &
    wait $! || rc=$?
    echo "$(($(date +%s) - start)) $rc" >"$CI_TMP/bg$id.end"
  ) &
  BG_PIDS+=($!)
  BG_NAMES+=("$name")
}

join_background() {
  local i secs rc failed=0
  for i in "${!BG_PIDS[@]}"; do
    wait "${BG_PIDS[$i]}" || true
    echo "== ${BG_NAMES[$i]} (ran in the background)"
    cat "$CI_TMP/bg$i.log"
    read -r secs rc <"$CI_TMP/bg$i.end" || { secs=0 rc=1; }
    _ended "${BG_NAMES[$i]}" "$secs" "$rc" " (background)"
    [ "$rc" -eq 0 ] || failed=$rc
  done
  BG_PIDS=() BG_NAMES=()
  if [ "$failed" -ne 0 ]; then ci_summary; exit "$failed"; fi
}
