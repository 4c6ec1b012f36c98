#!/usr/bin/env bash
# publish.sh: push the image that `make container-test` smoke-tested (never a rebuild) and print its digest.
#
#   bash scripts/publish.sh REGISTRY/NAME:TAG [MORE:TAGS ...]      (make publish IMAGE=REGISTRY/NAME:TAG)
#
# container-test records the image it tested (its ID, a sha256 of the image config) in
# $TESTED_FILE. This script tags that very image ID as each reference given, pushes them,
# and prints the pushed digest (`REGISTRY/NAME@sha256:...` on the last line; the digest alone
# is written to $DIGEST_FILE). CI hands that digest to the deploy step (helm --set
# image.digest=..., kustomize `images: [{name: ..., digest: ...}]`). Pushing requires a prior
# `docker login` to the registry (loopback registries need none).
#
# Env: TESTED_FILE=reports/tested-image   DIGEST_FILE=reports/image-digest
set -euo pipefail

ROOT=${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TESTED_FILE=${TESTED_FILE:-$ROOT/reports/tested-image}
DIGEST_FILE=${DIGEST_FILE:-$ROOT/reports/image-digest}
fail() { echo "publish: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ -n "$1" ] || fail "usage: publish.sh REGISTRY/NAME:TAG [MORE:TAGS ...] (make publish IMAGE=...)"
[ -s "$TESTED_FILE" ] || fail "no smoke-tested image recorded in $TESTED_FILE: run make container-test first"
read -r TESTED_ID TESTED_REF <"$TESTED_FILE"
docker image inspect "$TESTED_ID" >/dev/null 2>&1 \
  || fail "the smoke-tested image $TESTED_ID ($TESTED_REF) is not in the local image store: run make container-test again"

REPO=""
for ref in "$@"; do
  case "$ref" in *@*) fail "$ref: give a tag, not a digest (the digest is what this prints)";; esac
  case "${ref##*/}" in *:*) name=${ref%:*};; *) fail "$ref: name a tag (REGISTRY/NAME:TAG)";; esac
  [ -z "$REPO" ] && REPO=$name
  [ "$name" = "$REPO" ] || fail "all references must name one repository ($REPO, not $name)"
  docker tag "$TESTED_ID" "$ref"
  echo "publish: pushing $ref (image $TESTED_ID, smoke-tested as $TESTED_REF)"
  out=$(docker push "$ref" 2>&1) || { echo "$out" >&2; fail "docker push $ref failed"; }
  echo "$out" | tail -1
  digest=$(echo "$out" | sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' | tail -1)
  [ -n "$digest" ] || fail "docker push $ref printed no digest"
  [ -z "${DIGEST:-}" ] || [ "$digest" = "$DIGEST" ] || fail "$ref pushed as $digest, an earlier tag as $DIGEST"
  DIGEST=$digest
done
# The registry's manifest must hold the tested image's config: the same image, by content.
pushed_id=$(docker image inspect -f '{{.Id}}' "$REPO@$DIGEST" 2>/dev/null || true)
[ -z "$pushed_id" ] || [ "$pushed_id" = "$TESTED_ID" ] || fail "$REPO@$DIGEST is image $pushed_id, not the tested $TESTED_ID"
mkdir -p "$(dirname "$DIGEST_FILE")"
echo "$DIGEST" >"$DIGEST_FILE"
echo "$REPO@$DIGEST"
