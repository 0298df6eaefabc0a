source "$(dirname "$0")/lib.sh"
bin=$(build step11-loadbalancing)
cd "$SMOKE_TMP"
"$bin" certs >/dev/null
start accounts 5052 "$bin" accounts
start a 5051 "$bin" server -addr localhost:5051 -replica a
start b 5053 "$bin" server -addr localhost:5053 -replica b
start c 5054 "$bin" server -addr localhost:5054 -replica c
all=localhost:5051,localhost:5053,localhost:5054
expect "Got cached value con" "$bin" client -addr $all
# With these addresses ring hash places the README's keys on the same replicas everywhere.
for kr in a:a b:c c:c key1:a key2:b key3:a; do
  expect "Stored ${kr%:*} (replica ${kr#*:})" "$bin" client -addr $all store ${kr%:*} v${kr%:*}
done
# Ring hash: the keys spread over all three replicas, and each is found again.
for i in $(seq 30); do "$bin" client -addr $all store key$i v$i 2>/dev/null; done >stored.txt
for r in a b c; do expect "(replica $r)" cat stored.txt; done
for i in $(seq 30); do
  r=$(grep "^Stored key$i " stored.txt | sed 's/.*(replica \(.\))/\1/')
  expect "Got cached value v$i (replica $r)" "$bin" client -addr $all get key$i
done
# Replica c stops: its keys become misses, the others are still found.
kill "${PIDS[3]}"
wait "${PIDS[3]}" 2>/dev/null || true
for i in $(seq 30); do
  if grep -q "^Stored key$i (replica c)" stored.txt; then
    expect_fail "code = NotFound" "$bin" client -addr $all get key$i
  else
    expect "Got cached value v$i" "$bin" client -addr $all get key$i
  fi
done
