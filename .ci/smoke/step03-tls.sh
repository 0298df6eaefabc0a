# What step03-tls/README.md does not show: a server started before the certs
# command says what to do. The README's commands run in internal/readmetest.
source "$(dirname "$0")/lib.sh"
bin=$(build step03-tls)
cd "$SMOKE_TMP"
expect_fail "run the certs command first" "$bin" server
