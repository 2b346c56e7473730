#!/usr/bin/env bash
# One command for a newcomer: install what is missing, build, and start the
# HTTP service on the bundled default model (models/fashion-vit-tiny).
#   ./run.sh                      # vitfit serve on http://127.0.0.1:8080 (data in ./data)
#   ./run.sh --port 9000 ...      # any `vitfit serve` flag (vitfit serve --help)
#   ./run.sh classify IMAGE...    # or any other vitfit command
# BUILD=DIR builds and runs in DIR instead of build/ (tests/readme runs this
# script on the build it tests).
set -euo pipefail
cd "$(dirname "$0")"
build=${BUILD:-build}
VITFIT_WITH_FUZZ=0 VITFIT_WITH_BROWSER=0 tools/install-deps.sh
[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
ninja -C "$build" >/dev/null
case "${1:-}" in
  classify | inspect | train | eval | bench | init)
    cmd=$1
    shift
    if [ "$cmd" = classify ] && [ $# -eq 0 ]; then
      set -- --model models/fashion-vit-tiny models/fashion-vit-tiny/samples/*.png
    fi
    exec "$build/server/vitfit" "$cmd" "$@" ;;
esac
exec "$build/server/vitfit" serve --model models/fashion-vit-tiny --data-dir data "$@"
