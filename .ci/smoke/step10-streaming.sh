# What step10-streaming/README.md does not show: a Dump is logged on both
# sides (the README leaves out the client's records). The README's commands
# run in internal/readmetest.
source "$(dirname "$0")/lib.sh"
bin=$(build step10-streaming)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start server 5051 "$bin" server
expect "side=client method=/rpc.Cache/Dump code=OK" "$bin" client dump
expect "side=server method=/rpc.Cache/Dump code=OK" cat server.log
