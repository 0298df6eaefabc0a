source "$(dirname "$0")/lib.sh"
bin=$(build step09-structured-errors)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start server 5051 "$bin" server
# once PATTERN: the cache server logged PATTERN exactly once.
once() { [ "$(grep -c -- "$1" server.log)" = 1 ] && echo "once: $1"; }
# thrice PATTERN: the cache server logged PATTERN exactly three times.
thrice() { [ "$(grep -c -- "$1" server.log)" = 3 ] && echo "three times: $1"; }
expect "Got cached value con" "$bin" client
# Permanent errors come back at once, with their structured detail.
expect_fail 'code = NotFound desc = key "nothing-here" not found (temporary: false, user error code: 2)' "$bin" client get nothing-here
expect "once" once 'method=/rpc.Cache/Get code=NotFound'
for k in a b c; do expect "Stored $k" "$bin" client -token gopher store $k v; done
expect_fail "code = FailedPrecondition desc = account exceeds max key limit 3 (temporary: false, user error code: 3)" "$bin" client -token gopher store d v
expect "once" once 'method=/rpc.Cache/Store code=FailedPrecondition'
expect_fail "(temporary: false, user error code: 4)" "$bin" client -token nobody get gopher
# Accounts goes away: temporary, so the client tries three times.
kill "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
expect_fail "(temporary: true, user error code: 0)" "$bin" client -get-timeout 5s get gopher
expect "three times" thrice 'side=server method=/rpc.Cache/Get code=Unavailable'
