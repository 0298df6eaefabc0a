# What step10-streaming/README.md does not show: a Dump is logged on both
# sides (the README leaves out the client's records). The README's commands
# run in internal/readmetest.
source "$(dirname "$0")/lib.sh"
bin=$(build step10-streaming)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start server 5051 "$bin" server
expect "Got cached value con" "$bin" client
# The unary DumpAll on a small account, then on one over the 4 MB message limit, which only the stream can dump.
expect "gopher=con" "$bin" client dump-all
expect "Stored 96 keys of 65536 bytes" "$bin" client fill 96 65536
expect_fail "code = ResourceExhausted desc = grpc: received message larger than max" "$bin" client dump-all
expect "fill-95=(65536 bytes)" "$bin" client dump
for k in a b c; do expect "Stored $k" "$bin" client -token gopher store $k v$k; done
# A dump prints the tenant's own items, and nobody else's.
for item in a=va b=vb c=vc; do expect "$item" "$bin" client -token gopher dump; done
expect "gopher=con" "$bin" client dump
if "$bin" client -token gopher dump 2>/dev/null | grep -q gopher=con; then echo "FAIL: another tenant's item in the dump"; exit 1; fi
expect_fail "code = Unauthenticated" "$bin" client -token nobody dump
expect "side=client method=/rpc.Cache/Dump code=OK" "$bin" client dump
expect "side=server method=/rpc.Cache/Dump code=OK" cat server.log
