#!/usr/bin/env bash
# lint-deploy.sh: offline validation of everything that ships the service (make lint-deploy).
#   Dockerfile          hadolint (ignores only inline, each with its reason)
#   .github/workflows   check-jsonschema (GitHub's workflow schema) + actionlint
#   docker-compose*.yml check-jsonschema (the Compose Specification, i.e. what Compose v2 loads)
#                       + `config` by every compose CLI present (v2 plugin and/or docker-compose 1.29)
#   k8s/                kubectl kustomize (base + overlays/<env>, and k8s/stream/) | kubernetes-validate --strict, checkov
#   charts/             helm lint --strict and helm template per environment | kubernetes-validate
#                       --strict, checkov (tests/deploy/test_helm_chart.py also checks helm == kustomize)
#   Jenkinsfile         npm-groovy-lint --noserver (no error, no warning; .groovylintrc.json)
#   .gitlab-ci.yml      check-jsonschema (GitLab's CI schema), checkov
# Tools come from the pipenv dev environment (pipenv run ...); checkov from its own venv, given by
# CHECKOV (default .venv-iac/bin/checkov); helm and npm-groovy-lint from .tools/bin (make tools).
# A missing tool is an error, not a skip.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
CHECKOV=${CHECKOV:-.venv-iac/bin/checkov}
OUT=$(mktemp -d)
FAILED=(); PASSED=()

check() {  # check NAME CMD...: run, record the outcome, show output only on failure
  local name=$1; shift
  if "$@" >"$OUT/log" 2>&1; then
    PASSED+=("$name"); printf 'ok    %s\n' "$name"
  else
    FAILED+=("$name"); printf 'FAIL  %s\n' "$name"; sed 's/^/      /' "$OUT/log"
  fi
}
need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || { FAILED+=("missing tool: $t"); printf 'FAIL  missing tool: %s\n' "$t"; }
  done
}

need hadolint check-jsonschema actionlint kubectl kubernetes-validate helm npm-groovy-lint
ENVS=(dev test accept prod)
HELM_HOME=$(mktemp -d); trap 'rm -rf "$OUT" "$HELM_HOME"' EXIT
helm_() { HOME=$HELM_HOME helm "$@"; }
[ -x "$CHECKOV" ] || { FAILED+=("missing tool: checkov at $CHECKOV"); echo "FAIL  checkov not found at $CHECKOV (set CHECKOV)"; }

# --- Dockerfile ---
command -v hadolint >/dev/null && check "hadolint Dockerfile" hadolint Dockerfile

# --- GitHub Actions workflows ---
WORKFLOWS=(.github/workflows/*.yml)
if command -v check-jsonschema >/dev/null; then
  check "workflow schema (${#WORKFLOWS[@]} files)" check-jsonschema --builtin-schema vendor.github-workflows "${WORKFLOWS[@]}"
fi
command -v actionlint >/dev/null && check "actionlint" actionlint "${WORKFLOWS[@]}"

# --- compose ---
COMPOSE_YAMLS=(docker-compose*.yml)
if command -v check-jsonschema >/dev/null; then
  check "compose-spec schema (${#COMPOSE_YAMLS[@]} files)" check-jsonschema --builtin-schema vendor.compose-spec "${COMPOSE_YAMLS[@]}"
fi
# The combinations people run: default (base + override), host network, host network + data folder.
COMBOS=("docker-compose.yml docker-compose.override.yml"
        "docker-compose.yml docker-compose.hostnet.yml"
        "docker-compose.yml docker-compose.hostnet.yml docker-compose.data.yml"
        "docker-compose.yml docker-compose.override.yml docker-compose.data.yml")
compose_config() {  # compose_config CLI... -- FILES...
  local cli=() files=() f
  while [ "$1" != -- ]; do cli+=("$1"); shift; done; shift
  for f in "$@"; do files+=(-f "$f"); done
  TLC_DATA_DIR=${TLC_DATA_DIR:-/tmp} "${cli[@]}" "${files[@]}" config -q \
    && TLC_DATA_DIR=${TLC_DATA_DIR:-/tmp} "${cli[@]}" "${files[@]}" --profile stream config -q
}
CLIS=0
if docker compose version >/dev/null 2>&1; then
  CLIS=$((CLIS + 1))
  for c in "${COMBOS[@]}"; do
    # shellcheck disable=SC2086  # word splitting of the file list is intended
    check "docker compose (v2) config: $c" compose_config docker compose -- $c
  done
fi
if command -v docker-compose >/dev/null 2>&1; then
  CLIS=$((CLIS + 1))
  for c in "${COMBOS[@]}"; do
    # shellcheck disable=SC2086
    check "docker-compose ($(docker-compose version --short 2>/dev/null)) config: $c" compose_config docker-compose -- $c
  done
fi
[ "$CLIS" -gt 0 ] || { FAILED+=("missing tool: docker compose / docker-compose"); echo "FAIL  no compose CLI (docker compose v2 or docker-compose)"; }

# --- Kubernetes ---
if command -v kubectl >/dev/null; then
  check "kubectl kustomize k8s" sh -c "kubectl kustomize k8s > '$OUT/k8s.yaml'"
  for env in "${ENVS[@]}"; do
    check "kubectl kustomize k8s/overlays/$env" sh -c "{ echo ---; kubectl kustomize k8s/overlays/$env; } >> '$OUT/k8s.yaml'"
  done
  if command -v kubernetes-validate >/dev/null && [ -s "$OUT/k8s.yaml" ]; then
    check "kubernetes-validate --strict" kubernetes-validate --strict "$OUT/k8s.yaml"
  fi
  # Skips are annotated on the resources themselves (checkov.io/skipN: CHECK=reason).
  if [ -x "$CHECKOV" ] && [ -s "$OUT/k8s.yaml" ]; then
    check "checkov (kubernetes, rendered kustomize)" "$CHECKOV" --skip-download --quiet --compact \
      --framework kubernetes -f "$OUT/k8s.yaml"
  fi
  # The stream consumer overlay (k8s/stream/), validated the same way.
  check "kubectl kustomize k8s/stream" sh -c "kubectl kustomize k8s/stream > '$OUT/stream.yaml'"
  if command -v kubernetes-validate >/dev/null && [ -s "$OUT/stream.yaml" ]; then
    check "kubernetes-validate --strict (stream)" kubernetes-validate --strict "$OUT/stream.yaml"
  fi
  if [ -x "$CHECKOV" ] && [ -s "$OUT/stream.yaml" ]; then
    check "checkov (kubernetes, k8s/stream)" "$CHECKOV" --skip-download --quiet --compact \
      --framework kubernetes -f "$OUT/stream.yaml"
  fi
fi
# --- Helm chart ---
if command -v helm >/dev/null; then
  check "helm lint --strict (default values)" helm_ lint --strict charts/ride-duration
  : > "$OUT/helm.yaml"
  for env in "${ENVS[@]}"; do
    check "helm lint --strict ($env)" helm_ lint --strict charts/ride-duration -f "charts/ride-duration/values-$env.yaml"
    check "helm template ($env)" sh -c "{ echo ---; HOME='$HELM_HOME' helm template ride-duration charts/ride-duration \
      -n ride-duration-$env -f charts/ride-duration/values-$env.yaml; } >> '$OUT/helm.yaml'"
  done
  if command -v kubernetes-validate >/dev/null && [ -s "$OUT/helm.yaml" ]; then
    check "kubernetes-validate --strict (helm, 4 environments)" kubernetes-validate --strict "$OUT/helm.yaml"
  fi
  if [ -x "$CHECKOV" ] && [ -s "$OUT/helm.yaml" ]; then
    check "checkov (kubernetes, helm renders)" "$CHECKOV" --skip-download --quiet --compact \
      --framework kubernetes -f "$OUT/helm.yaml"
  fi
fi

# --- other CI systems ---
command -v npm-groovy-lint >/dev/null && check "npm-groovy-lint Jenkinsfile" \
  npm-groovy-lint --noserver --failon warning --config .groovylintrc.json Jenkinsfile
command -v check-jsonschema >/dev/null && check "gitlab-ci schema" \
  check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml

# The workflows as checkov can read them (scripts/workflows-for-checkov.sh says why); an empty report fails.
checkov_workflows() {
  bash scripts/workflows-for-checkov.sh "$OUT/gha" || return 1
  "$CHECKOV" --skip-download --compact --framework github_actions -d "$OUT/gha" >"$OUT/gha.log" 2>&1
  local rc=$?
  cat "$OUT/gha.log"
  [ $rc -eq 0 ] && grep -q "github_actions scan results" "$OUT/gha.log"
}

if [ -x "$CHECKOV" ]; then
  check "checkov (dockerfile)" "$CHECKOV" --skip-download --quiet --compact --framework dockerfile -f Dockerfile
  check "checkov (github_actions)" checkov_workflows
  check "checkov (gitlab_ci)" "$CHECKOV" --skip-download --quiet --compact --framework gitlab_ci -f .gitlab-ci.yml
fi

echo "lint-deploy: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[ ${#FAILED[@]} -eq 0 ]
