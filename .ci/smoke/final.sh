# What final/README.md does not show: a missing key, an overwrite at the
# quota, and the load tool over all three replicas. The README's commands
# (devstack, cachectl, the Python client) run in internal/readmetest.
source "$(dirname "$0")/lib.sh"
for c in devstack cachectl cacheload; do go build -o "$SMOKE_TMP/$c" "./final/cmd/$c"; done
cd "$SMOKE_TMP"
start devstack 5053 ./devstack -log-level warn
for p in 5050 5051 5052; do (exec 3<>"/dev/tcp/127.0.0.1/$p") || { cat devstack.log; exit 1; }; done
expect_fail "code = NotFound" ./cachectl get x
for k in a b c; do expect "Stored $k" ./cachectl -token gopher store $k v; done
expect "Stored a" ./cachectl -token gopher store a overwritten
expect "a	overwritten" ./cachectl -token gopher dump
# The load tool over all three replicas with ring hash and TLS: every Get
# finds its key, nothing fails (within the default per-tenant burst).
out=$(./cacheload -addr 127.0.0.1:5051,127.0.0.1:5052,127.0.0.1:5053 -lb ring_hash -ca .dev/ca.crt -op mix -n 150 -c 4 -json -q)
if ! tr -d ' \n' <<<"$out" | grep -q '"total":{"calls":150,"calls_per_second":[0-9.e+]*,"errors_by_code":{}'; then
  echo "FAIL: cacheload over three replicas:"; echo "$out"; exit 1
fi
echo "ok: cacheload drove 150 calls over three replicas with ring hash, no errors"
# The HTTP listener: the console page, then REST and Connect against the
# same store (the README's curl examples).
# protojson puts a space after some commas at random (on purpose, so that
# nobody depends on its layout; the choice changes with the binary), so
# JSON answers are compared without spaces.
T='Authorization: Bearer inconshreveable'
nospace() { "$@" | tr -d ' '; }
expect "Cache console" curl -sf http://127.0.0.1:8080/
expect '{"revision":"' nospace curl -sf -X PUT --json '{"val":"cmVzdA=="}' -H "$T" http://127.0.0.1:8080/v1/keys/a%2Fb
expect '{"val":"cmVzdA==","revision":"' nospace curl -sf -H "$T" http://127.0.0.1:8080/v1/keys/a%2Fb
expect '{"key":"a/b","val":"cmVzdA=="}' nospace curl -sf -H "$T" http://127.0.0.1:8080/v1/keys
expect '{"val":"cmVzdA==","revision":"' nospace curl -sf --json '{"key":"a/b"}' -H "$T" -H 'Connect-Protocol-Version: 1' http://127.0.0.1:8080/rpc.Cache/Get
expect '"reason":"UNKNOWN_TOKEN"' nospace curl -s -H 'Authorization: Bearer nobody' http://127.0.0.1:8080/v1/keys/gopher
