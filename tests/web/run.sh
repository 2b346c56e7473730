#!/usr/bin/env bash
# The browser test of the try-it page (meson test web_page; tests/web/meson.build
# sets VITFIT_BIN, VITFIT_SOURCE_ROOT, WEB_FIXTURE and WEB_NPM_DIR).
#
# Installs puppeteer-core from the committed package-lock.json into
# $WEB_NPM_DIR once (tools/npm-ci-once.sh); its install script, which would
# download a browser, does not run: Debian's chromium does.
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

. "$here/../../tools/npm-ci-once.sh"
npm_ci_once web_page "$here" "$npm_dir" node_modules/puppeteer-core || exit 1
exec node "$here/web_page.mjs"
