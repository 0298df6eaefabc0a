#!/usr/bin/env bash
# final across a real network: Accounts, three cache replicas and the client
# each in their own network namespace, joined by veth pairs to a bridge that
# lives in a namespace of its own (the host's network is not touched; the
# subnet 10.213.0.0/24 exists only inside these namespaces). Names resolve
# as in Kubernetes: "accounts" and "cache" (one address per replica), from
# per-namespace /etc/hosts files that `ip netns exec` mounts. Then one
# replica's cable is pulled (its switch port set down) and the client must
# see what final/docs/operations.md and failures.md promise (Deploy, failure modes across hosts).
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
# TOOLS_BIN (set by .ci/run): the pinned tools, already built (static) for this run.
if [ -n "${TOOLS_BIN:-}" ]; then
  cp "$TOOLS_BIN/grpcurl" "$TMP/"
else
  CGO_ENABLED=0 go build -o "$TMP/" github.com/fullstorydev/grpcurl/cmd/grpcurl
fi
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
  # Three minutes: a hang bound, not a speed target.
  for _ in $(seq 1800); do
    if on "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "FAIL: $2:$3 does not answer from $1 after three minutes"; cat "$TMP"/*.log; exit 1
}

echo "== start Accounts and three replicas, each in its own namespace"
# The ledger on disk, as in the manifests: new keys are granted from the
# start (without it, Accounts would refuse them for its recovery grace).
# Started with ip netns exec itself, not through on(): a function in the
# background runs in a subshell, and killing the subshell at cleanup would
# leave the server running; ip execs the server, so $! is the server.
ip netns exec "$P-acc" "$TMP/accounts-server" -addr "${IP[acc]}:5050" -accounts "$S/accounts.json" -ledger "$TMP/ledger.db" \
  -cert "$S/server.crt" -key "$S/server.key" -ca "$S/ca.crt" -log-level warn >"$TMP/acc.log" 2>&1 &
PIDS+=($!)
wait_port c1 "${IP[acc]}" 5050
for i in 1 2 3; do
  # -peers is the clients' target: a call for a key another replica owns
  # is forwarded to it, across hosts.
  ip netns exec "$P-c$i" "$TMP/cache-server" -addr "${IP[c$i]}:5051" -id "cache-$i" -accounts dns:///accounts:5050 \
    -peers dns:///cache:5051 -self "${IP[c$i]}:5051" \
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

echo "== any replica serves any key: each key read through the replicas that do not own it"
# grpcurl dials one address (no ring): the replica forwards to the owner.
# The certificates name the service, not the addresses, hence -servername.
grpcurl() { on cli "$TMP/grpcurl" -cacert "$S/ca.crt" -servername cache -H "authorization: Bearer $TOKEN" "$@"; }
n=0
for k in smoke-01 smoke-02 smoke-03 smoke-04 smoke-05 smoke-06; do
  for i in 1 2 3; do
    [ "${OWNER[$k]}" = "cache-$i" ] && continue
    out=$(grpcurl -v -d "{\"key\":\"$k\"}" "${IP[c$i]}:5051" rpc.Cache/Get 2>&1) || { echo "FAIL: get $k through cache-$i: $out"; exit 1; }
    grep -qF "\"val\": \"$(printf 'v-%s' "$k" | base64)\"" <<<"$out" || { echo "FAIL: get $k through cache-$i (owner ${OWNER[$k]}): $out"; exit 1; }
    grep -qi "^x-forwarded-by: cache-$i" <<<"$out" || { echo "FAIL: get $k through cache-$i: no x-forwarded-by: cache-$i header: $out"; exit 1; }
    n=$((n + 1))
  done
done
echo "ok: $n Gets through a replica that does not own the key were forwarded across hosts and returned the value"

echo "== partition cache-3 from Accounts only (blackhole routes both ways: packets vanish, nothing is refused)"
# New keys that cache-3 owns (and one that cache-1 owns), found by dry run
# while Accounts is still reachable: a dry run stores nothing.
NEW3=(); NEW1=()
for i in $(seq 1 60); do
  k="part-$i"
  out=$(ctl -dry-run store "$k" x)
  case $out in
  *"(replica cache-3)") NEW3+=("$k") ;;
  *"(replica cache-1)") NEW1+=("$k") ;;
  esac
  [ ${#NEW3[@]} -ge 12 ] && [ ${#NEW1[@]} -ge 2 ] && break
done
[ ${#NEW3[@]} -ge 12 ] && [ ${#NEW1[@]} -ge 2 ] || { echo "FAIL: too few new keys for cache-3 (${#NEW3[@]}) or cache-1 (${#NEW1[@]})"; exit 1; }
ON3=(); for k in "${!OWNER[@]}"; do [ "${OWNER[$k]}" = cache-3 ] && ON3+=("$k"); done
on c3 ip route add blackhole "${IP[acc]}/32"
on acc ip route add blackhole "${IP[c3]}/32"
# The auth cache's entries are fresh for -auth-ttl (5s): past it, cache-3
# serves known tenants from stale entries (-auth-stale). A TTL has no
# event to await.
sleep 6
# ms CMD...: runs CMD, sets OUT and MS (its wall time), returns its status.
ms() { local start rc=0; start=$(date +%s%N); OUT=$("$@" 2>&1) || rc=$?; MS=$((($(date +%s%N) - start) / 1000000)); return $rc; }
for k in "${ON3[@]}"; do
  ms ctl get "$k" || { echo "FAIL: get $k on cache-3 cut off from Accounts: $OUT"; exit 1; }
  [ "$OUT" = "v-$k" ] || { echo "FAIL: get $k on cache-3 cut off from Accounts: $OUT (want v-$k)"; exit 1; }
  echo "ok: get $k on cache-3 (cut off from Accounts) in ${MS}ms"
done
k=${ON3[0]}
# An overwrite that does not grow needs no bytes from Accounts (one that
# grows past the replica's spare bytes needs Accounts, as a new key does).
OVER="p-$k"
ms ctl store "$k" "$OVER" || { echo "FAIL: overwrite $k on cache-3 cut off from Accounts: $OUT"; exit 1; }
[ "$OUT" = "Stored $k (replica cache-3)" ] || { echo "FAIL: overwrite $k: $OUT"; exit 1; }
[ "$(ctl get "$k")" = "$OVER" ] || { echo "FAIL: get $k after its overwrite"; exit 1; }
echo "ok: overwrite of $k on cache-3 (cut off from Accounts) in ${MS}ms, read back"
# A new key takes a spare slot cache-3 reserved before, or, once none is
# left, is refused with a clear code: Unavailable, given before the
# caller's own deadline (cachectl's 5s: past it the caller would get
# DeadlineExceeded instead, and learn nothing). The times printed are for
# the reader; how fast a busy machine answers is not what is checked.
spare=0; refused=0; STORED=()
for k in "${NEW3[@]:0:10}"; do
  if ms ctl store "$k" new; then
    [ "$OUT" = "Stored $k (replica cache-3)" ] || { echo "FAIL: new key $k during the partition: $OUT"; exit 1; }
    spare=$((spare + 1)); STORED+=("$k"); echo "ok: new key $k on cache-3 from a spare slot in ${MS}ms"
  else
    grep -qF "code = Unavailable" <<<"$OUT" || { echo "FAIL: new key $k during the partition after ${MS}ms: $OUT (want Unavailable, before the caller's deadline)"; exit 1; }
    refused=$((refused + 1)); echo "ok: new key $k on cache-3 refused with Unavailable, before the caller's deadline (${MS}ms): $OUT"
  fi
done
echo "ok: new keys on cache-3 during the partition: $spare from spare slots, $refused refused with Unavailable"
for k in "${!OWNER[@]}"; do
  [ "${OWNER[$k]}" = cache-3 ] && continue
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k (on ${OWNER[$k]}) during cache-3's partition"; exit 1; }
done
k=${NEW1[0]}
ms ctl store "$k" new || { echo "FAIL: new key $k on cache-1 during cache-3's partition: $OUT"; exit 1; }
[ "$OUT" = "Stored $k (replica cache-1)" ] || { echo "FAIL: new key $k on cache-1: $OUT"; exit 1; }
echo "ok: the other replicas serve their keys and take new ones (${MS}ms)"

echo "== heal the partition"
# cache-3's lease reports to Accounts (every -lease-interval, 5s) say when
# it reaches Accounts again: its admin port (plaintext, on the loopback of
# its own namespace) counts them. Once one succeeds after the heal, the
# connection is up, and a new key must be stored at the first try.
# HANG_S bounds the wait only so that a hung system fails instead of
# running forever (gRPC's reconnect backoff after a long partition can
# reach tens of seconds); it is not a speed target.
HANG_S=180
renewed() { { on c3 "$TMP/cachectl" -admin 127.0.0.1:9051 stats 2>/dev/null || true; } | sed -n 's/^lease renewals .*\bok \([0-9]*\).*/\1/p'; }
before=$(renewed); before=${before:-0}
on c3 ip route del blackhole "${IP[acc]}/32"
on acc ip route del blackhole "${IP[c3]}/32"
healed=$(date +%s)
until now=$(renewed) && [ "${now:-0}" -gt "$before" ]; do
  [ $(($(date +%s) - healed)) -lt "$HANG_S" ] || { echo "FAIL: cache-3 reported no lease to Accounts within ${HANG_S}s of the heal (a hang bound): $(on c3 "$TMP/cachectl" -admin 127.0.0.1:9051 stats 2>&1)"; exit 1; }
  sleep 0.5
done
echo "ok: cache-3 renewed its lease at Accounts after the heal ($((now - before)) report(s), $(($(date +%s) - healed))s after it)"
k=${NEW3[10]}
ms ctl store "$k" after-heal || { echo "FAIL: new key $k on cache-3 after its lease was renewed: $OUT"; exit 1; }
[ "$OUT" = "Stored $k (replica cache-3)" ] || { echo "FAIL: new key $k after the heal: $OUT"; exit 1; }
echo "ok: a new key on cache-3 is stored at the first try once it reaches Accounts again (${MS}ms)"
for k in "${ON3[@]:1}"; do
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k after the heal"; exit 1; }
done
[ "$(ctl get "${ON3[0]}")" = "$OVER" ] || { echo "FAIL: get ${ON3[0]} (overwritten during the partition) after the heal"; exit 1; }
for k in "${STORED[@]:-}"; do
  [ -z "$k" ] || [ "$(ctl get "$k")" = new ] || { echo "FAIL: get $k (stored during the partition) after the heal"; exit 1; }
done
echo "ok: nothing cache-3 acknowledged was lost"
ctl store "${ON3[0]}" "v-${ON3[0]}" >/dev/null # the value the checks below expect
echo "== pull cache-2's cable (its switch port down): packets to it vanish, nothing is refused"
ip -n "$P-sw" link set p-c2 down
for k in "${!OWNER[@]}"; do
  [ "${OWNER[$k]}" = cache-2 ] && continue
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k (on ${OWNER[$k]}) after cache-2 was cut off"; exit 1; }
done
echo "ok: the other replicas keep serving their keys"
# A new client gives up connecting to cache-2 after the client's connect
# timeout (2s), and ring hash sends cache-2's keys to the next replica.
# That replica forwards them to their owner (-peers) over its own
# connection to cache-2, opened before the cut (the Dump and the forwarded
# Gets above): a forwarded call sent into the cut is never acknowledged,
# and the connection is declared dead by TCP_USER_TIMEOUT, which grpc-go
# sets to the peers' keepalive timeout (2s; were nothing sent, the
# keepalive ping would: 10s + 2s); that call fails UNAVAILABLE. The next
# call (a new cachectl: 2s to give up on cache-2 again) is forwarded once
# the hop's attempt to reconnect fails (2s), to the next replica: reads
# miss, writes land there. So the first miss comes after about four 2s
# (it was 14-17s with the former keepalive of 30s + 10s), each later
# key's after about 4s (the client's and the hop's connect timeouts).
# What is checked is the order: every call fails with a clear code
# (DeadlineExceeded or Unavailable while a forwarder's connection is not
# yet declared dead, then NotFound), never succeeds with a stale answer,
# and ends in NotFound. HANG_S bounds the wait so a hung failover fails the
# run; on a busy machine the times printed grow, and that is not a failure.
CUT=()
for k in "${!OWNER[@]}"; do [ "${OWNER[$k]}" = cache-2 ] && CUT+=("$k"); done
t0=$(date +%s%N); from="the cut"
for k in "${CUT[@]:0:2}"; do
  waited=0
  while :; do
    start=$(date +%s%N)
    if out=$(ctl get "$k" 2>&1); then echo "FAIL: get $k (on the cut-off cache-2) succeeded: $out"; exit 1; fi
    ms=$((($(date +%s%N) - start) / 1000000)); since=$((($(date +%s%N) - t0) / 1000000))
    grep -qF "code = NotFound" <<<"$out" && break
    grep -qE "code = (DeadlineExceeded|Unavailable)" <<<"$out" || { echo "FAIL: get $k (on the cut-off cache-2) after ${ms}ms: $out (want NotFound, or DeadlineExceeded / Unavailable while a forwarder's connection to cache-2 is not yet declared dead)"; exit 1; }
    [ "$since" -lt $((HANG_S * 1000)) ] || { echo "FAIL: get $k (on the cut-off cache-2) still failing ${since}ms after $from (want NotFound; ${HANG_S}s is a hang bound): $out"; exit 1; }
    echo "   get $k (on the cut-off cache-2) failed ${since}ms after $from, this call took ${ms}ms: $out"
    waited=$((waited + 1))
  done
  echo "ok: get $k (on the cut-off cache-2) misses on the next replica ${since}ms after $from (this call ${ms}ms, $waited calls failed before): $out"
  t0=$(date +%s%N); from="its first call"
done
k=${CUT[0]}
out=$(ctl store "$k" during-the-cut)
[[ $out =~ \(replica\ cache-[13]\)$ ]] || { echo "FAIL: store $k during the cut: $out"; exit 1; }
echo "ok: store $k during the cut: $out"

echo "== plug cache-2 back in"
ip -n "$P-sw" link set p-c2 up
# Its keys go back to it (same ring), with the values it held: the Store
# made elsewhere during the cut is not seen (README, failure modes).
# Until the client reaches cache-2 again (its port just came up), the
# key is still served by the next replica, with the Store made there.
# The wait is bounded by HANG_S, a hang bound, not a speed target.
back=$(date +%s)
until out=$(ctl get "$k" 2>&1) && [ "$out" = "v-$k" ]; do
  [ $(($(date +%s) - back)) -lt "$HANG_S" ] || { echo "FAIL: get $k ${HANG_S}s after the cable is back (a hang bound): $out (want v-$k, cache-2's own value)"; exit 1; }
  sleep 0.2
done
for k in "${CUT[@]}"; do
  [ "$(ctl get "$k")" = "v-$k" ] || { echo "FAIL: get $k after the cable is back"; exit 1; }
done
echo "ok: cache-2 serves its ${#CUT[@]} keys again, with the values it held"

echo "netns: passed"
