# What step09-structured-errors/README.md says in prose and does not show:
# how many attempts reached the cache server. Outputs are checked by the
# README's own commands (internal/readmetest); here only the counts.
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
# Permanent errors come back at once.
expect_fail "code = NotFound" "$bin" client get nothing-here
expect "once" once 'method=/rpc.Cache/Get code=NotFound'
for k in a b c; do expect "Stored $k" "$bin" client -token gopher store $k v; done
expect_fail "code = FailedPrecondition" "$bin" client -token gopher store d v
expect "once" once 'method=/rpc.Cache/Store code=FailedPrecondition'
# Accounts goes away: temporary, so the client tries three times.
kill "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
expect_fail "(temporary: true, user error code: 0)" "$bin" client -get-timeout 5s get gopher
expect "three times" thrice 'side=server method=/rpc.Cache/Get code=Unavailable'
