#!/usr/bin/env bash
# Usage: scripts/workflows-for-checkov.sh DEST
# Copies .github/workflows/*.yml to DEST/.github/workflows/ (checkov knows a workflow by that path) in the
# form checkov 3.1.47 can read. Its workflow schema gives concurrency.cancel-in-progress a oneOf of
# "string" and "expression", which an expression (ours: ${{ github.event_name == 'pull_request' }})
# matches twice: validation fails and checkov skips the file without a word (no report, exit 0). The
# copies carry a literal `true` there instead; no checkov check reads that value. Everything else is
# byte for byte the same. Used by scripts/lint-deploy.sh and tests/deploy/test_deploy_configs.py, which
# both fail on an empty github_actions report.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$1/.github/workflows"
mkdir -p "$dest"
for f in "$ROOT"/.github/workflows/*.yml; do
  sed -E 's/^(\s*cancel-in-progress:\s*)\$\{\{.*\}\}\s*$/\1true/' "$f" >"$dest/$(basename "$f")"
done
