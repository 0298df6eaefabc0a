source "$(dirname "$0")/lib.sh"
bin=$(build step02-errors)
start server 5051 "$bin" server
expect "Got cached value con" "$bin" client
expect_fail "code = NotFound" "$bin" client get nothing-here
expect_fail "code = InvalidArgument" "$bin" client store "" v
