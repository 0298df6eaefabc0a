source "$(dirname "$0")/lib.sh"
bin=$(build step05-interceptors)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start server 5051 "$bin" server
expect "msg=rpc side=client method=/rpc.Cache/Store code=OK" "$bin" client
expect "Got cached value con" "$bin" client
expect_fail "method=/rpc.Cache/Get code=NotFound" "$bin" client -token gopher get gopher
expect_fail "code = Unauthenticated" "$bin" client -token nobody store k v
# The servers log their sides of the same calls.
expect "side=server method=/rpc.Cache/Get code=NotFound" cat server.log
expect "side=client method=/rpc.Accounts/GetByToken code=NotFound" cat server.log
expect "side=server method=/rpc.Accounts/GetByToken code=NotFound" cat accounts.log
