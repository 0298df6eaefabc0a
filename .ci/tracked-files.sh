#!/usr/bin/env bash
# No build outputs in git: fails when a tracked file is a compiled binary
# (ELF, Mach-O or PE/COFF, by its first bytes), or is larger than 1 MB and
# not listed with a reason in .ci/large-files.txt ("PATH  REASON" a line).
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z | python3 -c '
import os, sys
allow = {}
with open(".ci/large-files.txt") as f:
    for line in f:
        parts = line.split(None, 1)
        if parts and not parts[0].startswith("#") and len(parts) == 2 and parts[1].strip():
            allow[parts[0]] = parts[1].strip()
magics = [(b"\x7fELF", "an ELF binary"), (b"MZ", "a PE (Windows) binary")] + [
    (bytes.fromhex(m), "a Mach-O binary") for m in ("feedface", "feedfacf", "cefaedfe", "cffaedfe", "cafebabe")]
bad = 0
for path in sys.stdin.buffer.read().decode().split("\0"):
    if not path or not os.path.isfile(path):
        continue  # deleted in the work tree
    with open(path, "rb") as f:
        head = f.read(4)
    kind = next((k for m, k in magics if head.startswith(m)), None)
    if kind:
        print(f"{path} is {kind}: build outputs do not belong in git (remove it, add it to .gitignore)")
        bad = 1
    elif os.path.getsize(path) > 1 << 20 and path not in allow:
        print(f"{path} is {os.path.getsize(path)} bytes (over 1 MB): list it in .ci/large-files.txt with the reason it is in git, or remove it")
        bad = 1
sys.exit(bad)
'
echo "tracked files: no compiled binaries, none over 1 MB without a reason"
