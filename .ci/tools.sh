#!/usr/bin/env bash
# The standard tools people point at a gRPC service, against a devstack on
# free loopback ports: grpcurl (list, describe, Store, Get and Dump through
# different replicas, an error with its details, the dry-run header) and
# grpc-health-probe against every process. Both are Go tools pinned in
# go.mod (go tool grpcurl, go tool grpc-health-probe).
source "$(dirname "$0")/smoke/lib.sh"
go build -o "$SMOKE_TMP/devstack" ./final/cmd/devstack
# TOOLS_BIN (set by .ci/run): the pinned tools, already built for this run.
if [ -n "${TOOLS_BIN:-}" ]; then
  cp "$TOOLS_BIN/grpcurl" "$TOOLS_BIN/grpc-health-probe" "$SMOKE_TMP/"
else
  go build -o "$SMOKE_TMP/" github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/grpc-ecosystem/grpc-health-probe
fi
cd "$SMOKE_TMP"
./devstack -dir .dev -accounts 127.0.0.1:0 -replicas 127.0.0.1:0,127.0.0.1:0,127.0.0.1:0 -http '' \
  -accounts-admin 127.0.0.1:0 -replicas-admin 127.0.0.1:0,127.0.0.1:0,127.0.0.1:0 -log-level warn >devstack.log 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q '^admin: ' devstack.log && break; sleep 0.1; done
line=$(grep '^devstack: ready: accounts on' devstack.log) || { echo "devstack did not start:"; cat devstack.log; exit 1; }
acc=$(sed -E 's/^devstack: ready: accounts on ([^,]+), .*/\1/' <<<"$line")
IFS=, read -r r1 r2 r3 <<<"$(sed -E 's/.*cache replicas on ([^ ]+), certificates.*/\1/' <<<"$line")"
mapfile -t admins < <(grep '^admin: ' devstack.log | grep -o 'http://[0-9.:]*' | sed 's#http://##')
[ ${#admins[@]} -eq 4 ] || { echo "want 4 admin ports:"; cat devstack.log; exit 1; }
echo "devstack: accounts $acc, replicas $r1 $r2 $r3, admin ports ${admins[*]}"

curl=(./grpcurl -cacert .dev/ca.crt -H 'authorization: Bearer inconshreveable')
expect "rpc.Cache" "${curl[@]}" "$r1" list
expect "grpc.health.v1.Health" "${curl[@]}" "$r1" list
expect "rpc Store ( .rpc.StoreReq ) returns ( .rpc.StoreResp )" "${curl[@]}" "$r1" describe rpc.Cache
# bytes are base64 in JSON: "Z3JwY3VybA==" is "grpcurl"; a Store answers the
# key's new revision. Stored through
# one replica, read and dumped through the others: any replica serves any key.
expect '"revision": "' "${curl[@]}" -d '{"key":"tools","val":"Z3JwY3VybA=="}' "$r1" rpc.Cache/Store
expect '"val": "Z3JwY3VybA=="' "${curl[@]}" -d '{"key":"tools"}' "$r2" rpc.Cache/Get
expect '"val": "Z3JwY3VybA=="' "${curl[@]}" -d '{"key":"tools"}' "$r3" rpc.Cache/Get
expect '"key": "tools"' "${curl[@]}" "$r3" rpc.Cache/Dump
# An error with its details: the reason and the field.
expect_fail '"reason": "INVALID_ARGUMENT"' "${curl[@]}" -d '{"key":""}' "$r2" rpc.Cache/Get
expect_fail '"field": "key"' "${curl[@]}" -d '{"key":""}' "$r2" rpc.Cache/Get
expect_fail '"reason": "KEY_NOT_FOUND"' "${curl[@]}" -d '{"key":"missing"}' "$r1" rpc.Cache/Get
expect_fail '"reason": "UNAUTHENTICATED"' ./grpcurl -cacert .dev/ca.crt -d '{"key":"tools"}' "$r1" rpc.Cache/Get
# A bad dry-run header is refused on the call it was meant for (with
# BadRequest), not on reflection; a good one stores nothing.
expect_fail '"field": "dry-run"' "${curl[@]}" -H 'dry-run: yes' -d '{"key":"dry","val":"eA=="}' "$r1" rpc.Cache/Store
expect "{}" "${curl[@]}" -H 'dry-run: 1' -d '{"key":"dry","val":"eA=="}' "$r1" rpc.Cache/Store
expect_fail "Code: NotFound" "${curl[@]}" -d '{"key":"dry"}' "$r2" rpc.Cache/Get

probe=(./grpc-health-probe -tls -tls-ca-cert .dev/ca.crt -connect-timeout 5s -rpc-timeout 5s)
for r in "$r1" "$r2" "$r3"; do
  expect "status: SERVING" "${probe[@]}" -addr "$r" -service rpc.Cache
  expect "status: SERVING" "${probe[@]}" -addr "$r" -gzip
done
# Accounts takes replicas only: mutual TLS.
expect "status: SERVING" "${probe[@]}" -tls-client-cert .dev/client.crt -tls-client-key .dev/client.key -addr "$acc" -service rpc.Accounts
# The admin ports: plaintext gRPC health for probes that cannot do TLS
# (Kubernetes' native gRPC probes).
for a in "${admins[@]}"; do
  expect "status: SERVING" ./grpc-health-probe -connect-timeout 5s -rpc-timeout 5s -addr "$a"
done
echo "tools: grpcurl and grpc-health-probe passed"
