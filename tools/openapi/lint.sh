#!/usr/bin/env bash
# Lints api/openapi.yaml with Redocly CLI, the version pinned in
# tools/openapi/package.json and package-lock.json (installed here by
# `npm ci` on the first run: the npm registry is the only network it needs).
# Rules: redocly.yaml (recommended) and the findings accepted on purpose in
# .redocly.lint-ignore.yaml.  Exits non-zero on any error or warning.
# Offline once installed: telemetry and the update check are off.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
  echo "lint.sh: npm not found (bash tools/install-deps.sh installs nodejs and npm)" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/redocly ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --ignore-scripts >&2
fi
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
out=$(node_modules/.bin/redocly lint ../../api/openapi.yaml --config redocly.yaml \
  --format stylish 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out"
# redocly exits 0 on warnings: a warning fails here too
if [ "$rc" -ne 0 ] || printf '%s' "$out" | grep -qE '[0-9]+ warnings?'; then
  echo "lint.sh: api/openapi.yaml has lint findings" >&2
  exit 1
fi
