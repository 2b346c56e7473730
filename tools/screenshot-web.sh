#!/usr/bin/env bash
# Retakes docs/web.png, the README's picture of the try-it page: the browser
# test (tests/web/web_page.mjs) run with WEB_SCREENSHOT set, which trains a
# longer job than the test's own (10 classes, 6 epochs, ~15 s on 2 cores) so
# that the curves show learning, and saves the page at the end of the run.
#   tools/screenshot-web.sh [BUILD_DIR]      (default build/, set up with meson)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/build.ninja" ] || { echo "no meson build in $build: meson setup $build" >&2; exit 1; }
ninja -C "$build" server/vitfit tests/web/web_fixture
WEB_SCREENSHOT="$PWD/docs/web.png" meson test -C "$build" --no-rebuild --print-errorlogs web_page
echo "docs/web.png: $(stat -c %s docs/web.png) bytes"
