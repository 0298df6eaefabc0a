# What step08-retry/README.md asks the reader to do by hand (start Accounts
# while a patient client retries), and a permanent error with one attempt.
source "$(dirname "$0")/lib.sh"
bin=$(build step08-retry)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start server 5051 "$bin" server
# Accounts is not up yet: a patient client retries until it is.
"$bin" client -attempts 20 -store-timeout 20s store k v >client.log 2>&1 &
client=$!
PIDS+=($client)
for _ in $(seq 600); do grep -q "code=Unavailable" server.log && break; sleep 0.1; done
expect "side=server method=/rpc.Cache/Store code=Unavailable" cat server.log
start accounts 5052 "$bin" accounts
if ! wait "$client"; then echo "FAIL: the retrying client gave up:"; cat client.log; exit 1; fi
expect "Stored k" cat client.log
expect "Got cached value con" "$bin" client
expect_fail "code = NotFound" "$bin" client -attempts 1 get nothing-here
