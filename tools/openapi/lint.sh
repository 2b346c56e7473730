#!/usr/bin/env bash
# Lints api/openapi.yaml with Redocly CLI, the version pinned in
# tools/openapi/package.json and package-lock.json (meson test openapi_lint,
# or by hand: bash tools/openapi/lint.sh).
#
# Installs it into $OPENAPI_NPM_DIR (meson sets a directory in the build
# tree; by hand: tools/openapi/npm) once (tools/npm-ci-once.sh).  Telemetry
# and the update check are off: offline after that.
# Rules: redocly.yaml (recommended) and the findings accepted on purpose in
# .redocly.lint-ignore.yaml.  Fails on any error or warning; fails (never
# skips) when node or npm is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

fail() {
  echo "openapi_lint: $*" >&2
  exit 1
}
command -v node >/dev/null || fail "node is missing: bash tools/install-deps.sh installs nodejs"
command -v npm >/dev/null || fail "npm is missing: bash tools/install-deps.sh installs it"
npm_dir=${OPENAPI_NPM_DIR:-$here/npm}

. "$here/../npm-ci-once.sh"
npm_ci_once openapi_lint "$here" "$npm_dir" node_modules/.bin/redocly || exit 1

cd "$here" # redocly.yaml and the ignore file are read from here
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
out=$("$npm_dir/node_modules/.bin/redocly" lint ../../api/openapi.yaml --config redocly.yaml \
  --format stylish 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out"
# redocly exits 0 on warnings: a warning fails here too
if [ "$rc" -ne 0 ] || printf '%s' "$out" | grep -qE '[0-9]+ warnings?'; then
  fail "api/openapi.yaml has lint findings"
fi
