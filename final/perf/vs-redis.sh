#!/usr/bin/env bash
# final against Redis as their users run them: one cache replica
# (devstack: Accounts and the replica in one process, rate limits lifted,
# logging at warn, Go's memory limit as deploy/cache.yaml ships it: half of
# its 512Mi) and Debian's redis-server (no persistence, plaintext on one
# port and TLS on another, the same development certificate).
#
# Throughput (perf/vsredis): final through final/client over TLS (its
# interceptors, token, retries; batches through client.Batcher), Redis
# through go-redis in plaintext, and over TLS as a second row; 32 calls in
# flight, 16-byte keys, 64-byte values; both pools dialled and warm before
# timing; final and Redis take turns round by round; each row is the median
# of the per-round ratios, p50/p99 of the median round, and each server's
# CPU per call from /proc/PID/stat. Batch rows: GetMany/StoreMany of 16 and
# 64 keys against MGET/MSET and pipelined GET/SET of as many. A third side
# per row, bare gRPC: the same client against a Cache service that does no
# work (vsredis -serve-floor, its own process: grpc-go over TLS with final's
# transport settings, no interceptor), so each row says how much of the gap
# to Redis is gRPC's own and how much is final's.
#
# Memory: each server's growth per key after -mem-keys new 16-byte keys with
# 64-byte values (cacheload): Redis's used_memory and both processes'
# resident set (RSS, from /proc).
#
#   perf/vs-redis.sh                        # 3 rounds of 2 s per row, 1,000,000 keys
#   perf/vs-redis.sh -d 1s -rounds 1 -mem-keys 20000  # quick (CI)
#   perf/vs-redis.sh -d 0                   # memory only
#   perf/vs-redis.sh -rows 'Many.*64'       # only the rows whose name matches
#
# Skips (exit 0) when redis-server is not installed: apt-get install redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

dur=2s
rounds=3
memkeys=1000000
rows=
while [ $# -gt 0 ]; do
  case $1 in
    -d) dur=$2; shift 2 ;;
    -mem-keys) memkeys=$2; shift 2 ;;
    -rounds) rounds=$2; shift 2 ;;
    -rows) rows=$2; shift 2 ;;
    *) echo "usage: $0 [-d DURATION] [-rounds N] [-mem-keys N] [-rows REGEXP]" >&2; exit 2 ;;
  esac
done
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "vs-redis: redis-server is not installed (apt-get install redis-server): skipped"
  exit 0
fi

tmp=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$tmp"' EXIT

# free_port: a random port nothing listens on (other programs on this
# machine may hold the well-known ones).
taken=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case $taken in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then taken+="$p "; echo "$p"; return; fi
  done
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

go build -o "$tmp/cacheload" ./cmd/cacheload
go build -o "$tmp/devstack" ./cmd/devstack
go build -o "$tmp/vsredis" ./perf/vsredis

acc_port=$(free_port)
cache_port=$(free_port)
redis_port=$(free_port)
redis_plain=$(free_port)
floor_port=$(free_port)
# A quota no run reaches, so new-key Stores measure the reservation, not the limit.
echo '{"perf": {"tenant": "perf", "max_cache_keys": 1000000000000}}' >"$tmp/accounts.json"
# GOMEMLIMIT: what deploy/cache.yaml's CACHE_MEMORY_LIMIT_RATIO (0.5) makes
# of its resources.limits.memory (512Mi) in a container.
GOMEMLIMIT=${GOMEMLIMIT:-256MiB} "$tmp/devstack" -dir "$tmp/dev" -accounts "127.0.0.1:$acc_port" -replicas "127.0.0.1:$cache_port" \
  -http "" -accounts-admin "" -replicas-admin "" \
  -accounts-file "$tmp/accounts.json" -rate 0 -tenant-rate 0 -log-level warn >"$tmp/devstack.log" 2>&1 &
cache_pid=$!
pids+=("$cache_pid")
wait_port "$cache_port"
redis-server --bind 127.0.0.1 --port "$redis_plain" --tls-port "$redis_port" \
  --tls-cert-file "$tmp/dev/server.crt" --tls-key-file "$tmp/dev/server.key" \
  --tls-ca-cert-file "$tmp/dev/ca.crt" --tls-auth-clients no \
  --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port"
wait_port "$redis_plain"

"$tmp/vsredis" -serve-floor "127.0.0.1:$floor_port" -cert "$tmp/dev/server.crt" -key "$tmp/dev/server.key" 2>"$tmp/floor.log" &
floor_pid=$!
pids+=("$floor_pid")
wait_port "$floor_port"

redis_info() {
  redis-cli -h 127.0.0.1 -p "$redis_port" --tls --cacert "$tmp/dev/ca.crt" info memory |
    tr -d '\r' | awk -F: -v k="$1" '$1 == k {print $2}'
}

# load TARGET [cacheload flags...]: runs cacheload against final or redis;
# the JSON result is in $tmp/out.json.
load() {
  local target=$1; shift
  local to=(-addr "127.0.0.1:$cache_port" -token perf)
  [ "$target" = redis ] && to=(-redis "127.0.0.1:$redis_port")
  "$tmp/cacheload" -q -json -ca "$tmp/dev/ca.crt" "${to[@]}" -c 32 -value-size 64 "$@" >"$tmp/out.json"
  local errs
  errs=$(tr -d '\n ' <"$tmp/out.json" | grep -o '"errors_by_code":{[^}]*}' | head -1)
  if [ "$errs" != '"errors_by_code":{}' ]; then echo "$target $*: $errs" >&2; touch "$tmp/failed"; fi
}
# field NAME: the first (the total's) value of NAME in the last result.
field() { grep -o "\"$1\": [0-9.e+]*" "$tmp/out.json" | head -1 | awk '{print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# Memory first, on fresh servers.
cache_rss0=$(rss_kib "$cache_pid")
redis_rss0=$(rss_kib "$redis_pid")
redis_used0=$(redis_info used_memory)
load final -op store -keys 0 -n "$memkeys"
load redis -op store -keys 0 -n "$memkeys"
cache_rss=$(awk -v a="$(rss_kib "$cache_pid")" -v b="$cache_rss0" -v n="$memkeys" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}')
redis_rss=$(awk -v a="$(rss_kib "$redis_pid")" -v b="$redis_rss0" -v n="$memkeys" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}')
redis_used=$(awk -v a="$(redis_info used_memory)" -v b="$redis_used0" -v n="$memkeys" 'BEGIN {printf "%.0f", (a - b) / n}')

if [ "$dur" != 0 ]; then
  echo "Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-), final's GOMEMLIMIT=${GOMEMLIMIT:-256MiB} GOGC=${GOGC:-100}"
  echo
  "$tmp/vsredis" -final "127.0.0.1:$cache_port" -ca "$tmp/dev/ca.crt" -token perf \
    -redis "127.0.0.1:$redis_plain" -redis-tls "127.0.0.1:$redis_port" \
    -floor "127.0.0.1:$floor_port" -final-pid "$cache_pid" -redis-pid "$redis_pid" -floor-pid "$floor_pid" -d "$dur" -rounds "$rounds" -rows "$rows" || touch "$tmp/failed"
  echo
fi

echo "| memory per key ($memkeys keys: 16-byte keys, 64-byte values) | final | Redis | final / Redis |"
echo "| --- | ---: | ---: | ---: |"
echo "| process RSS growth, bytes | $cache_rss | $redis_rss | $(ratio "$cache_rss" "$redis_rss") |"
echo "| Redis used_memory growth, bytes | | $redis_used | $(ratio "$cache_rss" "$redis_used") (final's RSS over it) |"

# Calls that failed make the figures meaningless: say so in the exit code.
[ ! -e "$tmp/failed" ]
