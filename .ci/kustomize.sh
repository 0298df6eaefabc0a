#!/usr/bin/env bash
# Renders final/deploy with kustomize, as `kubectl apply -k` would, from
# development secrets, and runs final/deploy's test of the rendered output:
# every document decodes strictly, and every Secret a pod mounts exists
# with the keys the servers read. kustomize comes through the Go module
# proxy (pinned; it does not touch go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."
KUSTOMIZE=sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp -r final/deploy "$TMP/deploy"
rm -rf "$TMP/deploy/secrets"
go run ./final/deploy/gensecrets -dir "$TMP/deploy/secrets" >/dev/null
go run "$KUSTOMIZE" build "$TMP/deploy" >"$TMP/rendered.yaml"
echo "ok: kustomize build final/deploy renders $(grep -c '^kind:' "$TMP/rendered.yaml") objects"
DEPLOY_RENDERED="$TMP/rendered.yaml" go test -count=1 -v -run TestRenderedManifests ./final/deploy/
