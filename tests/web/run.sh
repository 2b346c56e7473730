#!/usr/bin/env bash
# The browser test of the try-it page (meson test web_page; tests/web/meson.build
# sets VITFIT_BIN, VITFIT_SOURCE_ROOT, WEB_FIXTURE and WEB_NPM_DIR).
#
# Installs puppeteer-core from the committed package-lock.json into
# $WEB_NPM_DIR with `npm ci` -- once: a copy of package.json and the lockfile
# kept beside node_modules says which were installed, so a changed lockfile
# installs again and an unchanged one never touches the network.
# PUPPETEER_SKIP_DOWNLOAD: no browser is downloaded; Debian's chromium runs.
# Fails (never skips) when node, npm or chromium is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

fail() {
  echo "web_page: $*" >&2
  exit 1
}
command -v node >/dev/null || fail "node is missing: bash tools/install-deps.sh installs nodejs"
command -v npm >/dev/null || fail "npm is missing: bash tools/install-deps.sh installs it"
export WEB_CHROMIUM=${WEB_CHROMIUM:-/usr/bin/chromium}
[ -x "$WEB_CHROMIUM" ] || fail "$WEB_CHROMIUM is missing: bash tools/install-deps.sh installs chromium"
npm_dir=${WEB_NPM_DIR:?WEB_NPM_DIR is not set: run this through meson test web_page}

stamp=$npm_dir/installed-from
if ! cat "$here/package.json" "$here/package-lock.json" | cmp -s - "$stamp" ||
    [ ! -d "$npm_dir/node_modules/puppeteer-core" ]; then
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
  echo "web_page: npm ci (puppeteer-core from tests/web/package-lock.json) into $npm_dir" >&2
  (cd "$npm_dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
    fail "npm ci failed: the npm registry must be reachable for the first run"
  cat "$here/package.json" "$here/package-lock.json" >"$stamp"
fi
exec node "$here/web_page.mjs"
