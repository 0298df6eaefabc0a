#!/usr/bin/env bash
# final across a real network: Accounts, three cache replicas and the client
# each in their own network namespace, joined by veth pairs to a bridge that
# lives in a namespace of its own (the host's network is not touched; the
# subnet 10.213.0.0/24 exists only inside these namespaces). Names resolve
# as in Kubernetes: "accounts" and "cache" (one address per replica), from
# per-namespace /etc/hosts files that `ip netns exec` mounts. Then one
# replica's cable is pulled (its switch port set down) and the client must
# see what final/README.md promises (Deploy, failure modes across hosts).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "SKIP netns: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"

P="gw13-$$" # unique per run: namespaces are global on the host
NODES=(acc c1 c2 c3 cli)
declare -A IP=([acc]=10.213.0.10 [c1]=10.213.0.11 [c2]=10.213.0.12 [c3]=10.213.0.13 [cli]=10.213.0.20)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in sw "${NODES[@]}"; do
    ip netns del "$P-$n" 2>/dev/null || true
    rm -rf "/etc/netns/$P-$n"
  done
  rmdir /etc/netns 2>/dev/null || true # only if no one else uses it
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$P-sw" 2>/dev/null || skip "cannot create a network namespace (ip netns add failed)"

echo "== build (static, so names resolve with Go's resolver from /etc/hosts)"
CGO_ENABLED=0 go build -o "$TMP/" ./final/cmd/cache-server ./final/cmd/accounts-server ./final/cmd/cachectl ./final/cmd/cacheload ./final/deploy/gensecrets
"$TMP/gensecrets" -dir "$TMP/secrets" -tenant gw -max-keys 1000 >"$TMP/gensecrets.out"
TOKEN=$(sed -n 's/^token for tenant gw: //p' "$TMP/gensecrets.out")
S="$TMP/secrets"

echo "== network: bridge in $P-sw, one veth per node"
ip -n "$P-sw" link add br0 type bridge
ip -n "$P-sw" link set br0 up
for n in "${NODES[@]}"; do
  ip netns add "$P-$n"
  ip link add eth0 netns "$P-$n" type veth peer name "p-$n" netns "$P-sw"
  ip -n "$P-sw" link set "p-$n" master br0 up
  ip -n "$P-$n" addr add "${IP[$n]}/24" dev eth0
  ip -n "$P-$n" link set eth0 up
  ip -n "$P-$n" link set lo up
  mkdir -p "/etc/netns/$P-$n"
  {
    echo "127.0.0.1 localhost"
    echo "${IP[acc]} accounts"
    for c in c1 c2 c3; do echo "${IP[$c]} cache"; done
  } >"/etc/netns/$P-$n/hosts"
  # No nameserver: nothing leaves the namespaces.
  echo "nameserver 127.0.0.1" >"/etc/netns/$P-$n/resolv.conf"
done
on() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# wait_port NODE ADDR PORT: waits until ADDR:PORT accepts from NODE's namespace.
wait_port() {
  for _ in $(seq 100); do
    if on "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "FAIL: $2:$3 does not answer from $1"; cat "$TMP"/*.log; exit 1
}

echo "== start Accounts and three replicas, each in its own namespace"
# The ledger on disk, as in the manifests: new keys are granted from the
# start (without it, Accounts would refuse them for its recovery grace).
on acc "$TMP/accounts-server" -addr "${IP[acc]}:5050" -accounts "$S/accounts.json" -ledger "$TMP/ledger.db" \
  -cert "$S/server.crt" -key "$S/server.key" -ca "$S/ca.crt" -log-level warn >"$TMP/acc.log" 2>&1 &
PIDS+=($!)
wait_port c1 "${IP[acc]}" 5050
for i in 1 2 3; do
  on "c$i" "$TMP/cache-server" -addr "${IP[c$i]}:5051" -id "cache-$i" -accounts dns:///accounts:5050 \
    -cert "$S/server.crt" -key "$S/server.key" -ca "$S/ca.crt" \
    -client-cert "$S/cache-$i.crt" -client-key "$S/cache-$i.key" -log-level warn >"$TMP/c$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do wait_port cli "${IP[c$i]}" 5051; done

ctl() { on cli "$TMP/cachectl" -addr dns:///cache:5051 -ca "$S/ca.crt" -token "$TOKEN" "$@"; }

echo "== smoke from the client's namespace: dns:///cache:5051, ring hash, TLS for the name"
declare -A OWNER
for k in $(seq -f 'smoke-%02g' 1 24); do
  out=$(ctl store "$k" "v-$k")
  [[ $out =~ ^Stored\ $k\ \(replica\ (cache-[123])\)$ ]] || { echo "FAIL: store $k: $out"; exit 1; }
  OWNER[$k]=${BASH_REMATCH[1]}
done
for r in cache-1 cache-2 cache-3; do
  n=0; for k in "${!OWNER[@]}"; do [ "${OWNER[$k]}" = "$r" ] && n=$((n + 1)); done
  [ "$n" -gt 0 ] || { echo "FAIL: no key went to $r"; exit 1; }
  echo "ok: $n keys on $r"
done
for k in "${!OWNER[@]}"; do
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k"; exit 1; }
done
echo "ok: every key read back across the network"
[ "$(ctl dump | wc -l)" -eq 24 ] || { echo "FAIL: dump"; ctl dump; exit 1; }
echo "ok: dump asked every replica DNS names and got all 24 keys"
out=$(on cli "$TMP/cacheload" -addr dns:///cache:5051 -lb ring_hash -ca "$S/ca.crt" -token "$TOKEN" -op mix -n 150 -c 4 -json -q)
if ! tr -d ' \n' <<<"$out" | grep -q '"total":{"calls":150,"calls_per_second":[0-9.e+]*,"errors_by_code":{}'; then
  echo "FAIL: cacheload over dns:///cache:5051:"; echo "$out"; exit 1
fi
echo "ok: cacheload drove 150 calls over dns:///cache:5051 with ring hash, no errors"
if /usr/bin/python3 -c 'import grpc' 2>/dev/null; then
  # Python's grpc resolves dns:/// itself (and checks the name "cache"); it
  # has no ring hash by key, so store a key of its own on whichever replica.
  out=$(on cli /usr/bin/python3 final/clients/python/cachectl.py --addr dns:///cache:5051 --ca "$S/ca.crt" --token "$TOKEN" store py-dns v 2>&1) ||
    { echo "FAIL: the Python client over dns:///cache:5051: $out"; exit 1; }
  grep -qF "Stored py-dns" <<<"$out" || { echo "FAIL: the Python client over dns:///cache:5051: $out"; exit 1; }
  echo "ok: the Python client stores over dns:///cache:5051"
fi

echo "== pull cache-2's cable (its switch port down): packets to it vanish, nothing is refused"
ip -n "$P-sw" link set p-c2 down
for k in "${!OWNER[@]}"; do
  [ "${OWNER[$k]}" = cache-2 ] && continue
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k (on ${OWNER[$k]}) after cache-2 was cut off"; exit 1; }
done
echo "ok: the other replicas keep serving their keys"
# A new client gives up connecting to cache-2 after the client's connect
# timeout, and ring hash sends cache-2's keys to the next replica: reads
# miss, writes land there. Within the call's deadline, not after it.
CUT=()
for k in "${!OWNER[@]}"; do [ "${OWNER[$k]}" = cache-2 ] && CUT+=("$k"); done
for k in "${CUT[@]:0:2}"; do
  start=$(date +%s%N)
  if out=$(ctl get "$k" 2>&1); then echo "FAIL: get $k (on the cut-off cache-2) succeeded: $out"; exit 1; fi
  ms=$((($(date +%s%N) - start) / 1000000))
  grep -qF "code = NotFound" <<<"$out" || { echo "FAIL: get $k (on the cut-off cache-2) after ${ms}ms: $out (want NotFound from the next replica)"; exit 1; }
  echo "ok: get $k (on the cut-off cache-2) misses on the next replica after ${ms}ms: $out"
done
k=${CUT[0]}
out=$(ctl store "$k" during-the-cut)
[[ $out =~ \(replica\ cache-[13]\)$ ]] || { echo "FAIL: store $k during the cut: $out"; exit 1; }
echo "ok: store $k during the cut: $out"

echo "== plug cache-2 back in"
ip -n "$P-sw" link set p-c2 up
# Its keys go back to it (same ring), with the values it held: the Store
# made elsewhere during the cut is not seen (README, failure modes).
for _ in $(seq 50); do out=$(ctl get "$k" 2>&1) && break; sleep 0.2; done
[ "$out" = "v-$k" ] || { echo "FAIL: get $k after the cable is back: $out (want v-$k, cache-2's own value)"; exit 1; }
for k in "${CUT[@]}"; do
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k after the cable is back"; exit 1; }
done
echo "ok: cache-2 serves its ${#CUT[@]} keys again, with the values it held"
echo "netns: passed"
