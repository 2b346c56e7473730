#!/usr/bin/env bash
# Lints api/openapi.yaml with Redocly CLI, the version pinned in
# tools/openapi/package.json and package-lock.json (meson test openapi_lint,
# or by hand: bash tools/openapi/lint.sh).
#
# Installs it with `npm ci` into $OPENAPI_NPM_DIR (meson sets a directory in
# the build tree; by hand: tools/openapi/npm) -- once: a copy of package.json
# and the lockfile kept beside node_modules says which were installed, so a
# changed lockfile installs again and an unchanged one never touches the
# network.  Telemetry and the update check are off: offline after that.
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

stamp=$npm_dir/installed-from
if ! cat "$here/package.json" "$here/package-lock.json" | cmp -s - "$stamp" ||
    [ ! -x "$npm_dir/node_modules/.bin/redocly" ]; then
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
  echo "openapi_lint: npm ci (@redocly/cli from tools/openapi/package-lock.json) into $npm_dir" >&2
  (cd "$npm_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
    fail "npm ci failed: the npm registry must be reachable for the first run"
  cat "$here/package.json" "$here/package-lock.json" >"$stamp"
fi

cd "$here" # redocly.yaml and the ignore file are read from here
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
out=$("$npm_dir/node_modules/.bin/redocly" lint ../../api/openapi.yaml --config redocly.yaml \
  --format stylish 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out"
# redocly exits 0 on warnings: a warning fails here too
if [ "$rc" -ne 0 ] || printf '%s' "$out" | grep -qE '[0-9]+ warnings?'; then
  fail "api/openapi.yaml has lint findings"
fi
