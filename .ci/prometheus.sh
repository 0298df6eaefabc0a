#!/usr/bin/env bash
# Prometheus against a devstack: Debian's prometheus scrapes every process's
# admin port with the repository's scrape config (final/telemetry/prometheus.yml),
# and its HTTP API must show up == 1 for every target and gRPC's per-call
# histogram (grpc_server_call_duration_seconds_count) non-zero on each.
#
# PORT_BASE moves every port (public 5050-5053 and admin 9050-9053) by the
# same offset, for machines where those are taken.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v prometheus >/dev/null || { echo "prometheus not installed (apt-get install prometheus)"; exit 1; }

off=${PORT_BASE:-0}
pub() { echo "127.0.0.1:$((5050 + off + $1))"; }
adm() { echo "127.0.0.1:$((9050 + off + $1))"; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/devstack" ./final/cmd/devstack
go build -o "$tmp/cachectl" ./final/cmd/cachectl

"$tmp/devstack" -dir "$tmp/dev" -log-level warn -http= \
  -accounts "$(pub 0)" -replicas "$(pub 1),$(pub 2),$(pub 3)" \
  -accounts-admin "$(adm 0)" -replicas-admin "$(adm 1),$(adm 2),$(adm 3)" >"$tmp/devstack.out" 2>&1 &
pids+=($!)
for _ in $(seq 600); do grep -qs '^admin:' "$tmp/devstack.out" && break; sleep 0.1; done
grep -q '^admin:' "$tmp/devstack.out" || { cat "$tmp/devstack.out"; exit 1; }

# Traffic that reaches every process: stores spread over the replicas by
# ring hash (and reserve at Accounts), a dump asks every replica.
ctl() { "$tmp/cachectl" -addr "$(pub 1),$(pub 2),$(pub 3)" -ca "$tmp/dev/ca.crt" "$@" >/dev/null; }
for k in a b c d e f g h i j; do ctl store "$k" v; done
ctl dump

# The repository's scrape config, with the ports moved if PORT_BASE says so.
sed -e "s/127.0.0.1:9050/$(adm 0)/; s/127.0.0.1:9051/$(adm 1)/; s/127.0.0.1:9052/$(adm 2)/; s/127.0.0.1:9053/$(adm 3)/" \
  -e "s/scrape_interval: 5s/scrape_interval: 1s/" \
  final/telemetry/prometheus.yml >"$tmp/prometheus.yml"
web=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prometheus --config.file "$tmp/prometheus.yml" --storage.tsdb.path "$tmp/tsdb" \
  --web.listen-address "127.0.0.1:$web" --log.level warn >"$tmp/prometheus.out" 2>&1 &
pids+=($!)

query() { curl -fsS --get --data-urlencode "query=$1" "http://127.0.0.1:$web/api/v1/query"; }
# check QUERY: every one of the four targets has a result > 0.
check() {
  query "$1" | python3 -c '
import json, sys
want = set(sys.argv[1:])
res = json.load(sys.stdin)["data"]["result"]
ok = {r["metric"].get("instance") for r in res if float(r["value"][1]) > 0}
missing = want - ok
if missing:
    print("missing or zero:", sorted(missing), file=sys.stderr)
    sys.exit(1)
' "$(adm 0)" "$(adm 1)" "$(adm 2)" "$(adm 3)"
}
for _ in $(seq 60); do
  if check 'up' 2>/dev/null && check 'sum by (instance) (grpc_server_call_duration_seconds_count)' 2>/dev/null; then
    echo "prometheus: up == 1 and grpc_server_call_duration_seconds_count > 0 on $(adm 0) $(adm 1) $(adm 2) $(adm 3)"
    exit 0
  fi
  sleep 1
done
check 'up' || true
check 'sum by (instance) (grpc_server_call_duration_seconds_count)' || true
echo "--- devstack"; cat "$tmp/devstack.out"; echo "--- prometheus"; cat "$tmp/prometheus.out"
exit 1
