source "$(dirname "$0")/lib.sh"
bin=$(build step01-basic)
start server 5051 "$bin" server
expect "Got cached value con" "$bin" client
expect "Stored k" "$bin" client store k v
expect "Got cached value v" "$bin" client get k
