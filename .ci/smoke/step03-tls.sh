source "$(dirname "$0")/lib.sh"
bin=$(build step03-tls)
cd "$SMOKE_TMP"
expect_fail "run the certs command first" "$bin" server
expect "wrote certs/ca.crt" "$bin" certs
start server 5051 "$bin" server
expect "Got cached value con" "$bin" client
expect_fail "code = NotFound" "$bin" client get nothing-here
