source "$(dirname "$0")/lib.sh"
bin=$(build step04-multitenant)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start server 5051 "$bin" server
expect "Got cached value con" "$bin" client
expect_fail "code = NotFound" "$bin" client -token gopher get gopher
for k in a b c; do expect "Stored $k" "$bin" client -token gopher store $k v; done
expect_fail "code = FailedPrecondition desc = account exceeds max key limit 3" "$bin" client -token gopher store d v
expect "Stored a" "$bin" client -token gopher store a overwritten
expect_fail "code = Unauthenticated" "$bin" client -token nobody get gopher
