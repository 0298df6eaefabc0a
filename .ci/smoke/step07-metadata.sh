source "$(dirname "$0")/lib.sh"
bin=$(build step07-metadata)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start server 5051 "$bin" server
expect "Dry run: would store gopher" "$bin" client -dry-run
expect_fail "code = NotFound" "$bin" client get gopher
for k in a b; do expect "Stored $k" "$bin" client -token gopher store $k v; done
# Dry runs are checked like real Stores but count no keys.
expect "Dry run: would store c" "$bin" client -token gopher -dry-run store c v
expect "Dry run: would store d" "$bin" client -token gopher -dry-run store d v
expect "Dry run: would store a" "$bin" client -token gopher -dry-run store a new
expect "Got cached value v" "$bin" client -token gopher get a
expect "Stored c" "$bin" client -token gopher store c v
expect_fail "code = FailedPrecondition desc = account exceeds max key limit 3" "$bin" client -token gopher -dry-run store d v
expect_fail "code = Unauthenticated" "$bin" client -token nobody -dry-run store k v
expect "Got cached value con" "$bin" client
