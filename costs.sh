#!/usr/bin/env bash
# What each production concern costs: runs every step and final on loopback,
# one at a time, drives each with the same load tool (final/cmd/cacheload) and
# prints a Markdown table of Get and Store throughput (for final also Store
# of a new key per call, which takes a quota slot from Accounts). Limits meant
# for production traffic (the rate limits of step10 on) are lifted, so the table
# shows what each concern costs, not a limit doing its job.
#
#   ./costs.sh            # 10 s per measurement
#   ./costs.sh -d 2s      # quicker, noisier
#
# Every target gets the same load: 32 calls in flight on one connection, a
# 50-key space (under step04's 100-key quota), 64-byte values, one tenant.
set -euo pipefail
cd "$(dirname "$0")"

dur=10s
[ "${1:-}" = "-d" ] && dur=$2

tmp=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$tmp"' EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# bg LOG CMD...: starts CMD in the background, its output in LOG.
bg() { local log=$1; shift; "$@" >"$tmp/$log" 2>&1 & pids+=($!); }

go build -o "$tmp/cacheload" ./final/cmd/cacheload

# load OP [cacheload flags...]: prints calls per second (a -keys among the
# flags overrides the default 50: the last one wins).
load() {
  local op=$1; shift
  local out
  out=$("$tmp/cacheload" -q -json -op "$op" -d "$dur" -c 32 -keys 50 -value-size 64 "$@")
  local errs
  errs=$(tr -d '\n ' <<<"$out" | grep -o '"errors_by_code":{[^}]*}' | head -1)
  if [ "$errs" != '"errors_by_code":{}' ]; then echo "$op $*: $errs" >&2; touch "$tmp/failed"; fi
  grep -o '"calls_per_second": [0-9.]*' <<<"$out" | head -1 | awk '{printf "%.0f", $2}'
}

# start TARGET: starts the target's servers; sets FLAGS to the cacheload flags that reach it.
start() {
  local t=$1 bin="$tmp/$1"
  case $t in
    step01-*|step02-*)
      go build -o "$bin" "./$t"
      bg "$t.log" "$bin" server -addr 127.0.0.1:7051
      wait_port 7051
      FLAGS="-addr 127.0.0.1:7051" ;;
    step03-*)
      go build -o "$bin" "./$t"
      (cd "$tmp" && "$bin" certs >/dev/null)
      bg "$t.log" "$bin" server -addr 127.0.0.1:7051 -cert "$tmp/certs/server.crt" -key "$tmp/certs/server.key"
      wait_port 7051
      FLAGS="-addr 127.0.0.1:7051 -ca $tmp/certs/ca.crt" ;;
    step*)
      go build -o "$bin" "./$t"
      (cd "$tmp" && "$bin" certs >/dev/null)
      bg "$t-accounts.log" "$bin" accounts -addr 127.0.0.1:7052 -cert "$tmp/certs/server.crt" -key "$tmp/certs/server.key"
      wait_port 7052
      bg "$t.log" "$bin" server -addr 127.0.0.1:7051 -accounts 127.0.0.1:7052 \
        -cert "$tmp/certs/server.crt" -key "$tmp/certs/server.key" -ca "$tmp/certs/ca.crt" $(extra_server_flags "$t")
      wait_port 7051
      FLAGS="-addr 127.0.0.1:7051 -ca $tmp/certs/ca.crt" ;;
  esac
}

# extra_server_flags STEP: lifts limits meant for production traffic, so the
# load measures the cost of a concern, not a rate limit doing its job.
extra_server_flags() {
  case $1 in
    step0*) ;;
    *) echo "-rate 0" ;;
  esac
}

# start_final LEVEL: Accounts and one replica, the rate limits lifted,
# logging every call (info) or only failures (warn). The tenant's quota is
# out of reach, so new-key Stores measure the reservation, not the limit.
start_final() {
  [ -x "$tmp/devstack" ] || go build -o "$tmp/devstack" ./final/cmd/devstack
  echo '{"costs": {"tenant": "costs", "max_cache_keys": 1000000000000}}' >"$tmp/accounts.json"
  bg "final-$1.log" "$tmp/devstack" -dir "$tmp/dev" -accounts 127.0.0.1:7050 -replicas 127.0.0.1:7051 \
    -accounts-file "$tmp/accounts.json" -rate 0 -tenant-rate 0 -log-level "$1"
  wait_port 7051
  FLAGS="-addr 127.0.0.1:7051 -ca $tmp/dev/ca.crt -token costs"
}

targets=$(ls -d step[0-9][0-9]-*/ | tr -d /)
echo "| target | Get calls/s | Store calls/s | new-key Store calls/s |"
echo "| --- | ---: | ---: | ---: |"
for t in $targets; do
  start "$t"
  get=$(load get $FLAGS)
  store=$(load store $FLAGS)
  echo "| $t | $get | $store | |"
  stop_all
done
for level in info warn; do
  start_final $level
  get=$(load get $FLAGS)
  store=$(load store $FLAGS)
  fresh=$(load store $FLAGS -keys 0)
  echo "| final (log level $level) | $get | $store | $fresh |"
  stop_all
done
# Calls that failed make the figures meaningless: say so in the exit code.
[ ! -e "$tmp/failed" ]
