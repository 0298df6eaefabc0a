source "$(dirname "$0")/lib.sh"
bin=$(build step06-deadlines)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts -latency 3s
start server 5051 "$bin" server -accounts-timeout 2s
# The client's 1s deadline fires first (the message depends on whether the
# client's or the server's copy of the deadline fires first).
expect_fail "code = DeadlineExceeded" "$bin" client
# A caller with more time than the server's cap meets the cap.
expect_fail "code = DeadlineExceeded desc = accounts service did not answer in time" "$bin" client -store-timeout 5s store k v
# Both times Accounts stopped working on the call instead of sleeping out its 3s.
expect "method=/rpc.Accounts/GetByToken code=Canceled" cat accounts.log
