#!/usr/bin/env bash
# One command for a newcomer: install what is missing, build, and classify the
# bundled sample images with the bundled default model.
#   ./run.sh                   # samples of the bundled model
#   ./run.sh IMAGE...          # your own JPEG/PNG/BMP files
set -euo pipefail
cd "$(dirname "$0")"
VITFIT_WITH_FUZZ=0 tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
model=models/fashion-vit-tiny
if [ $# -eq 0 ]; then
  set -- "$model"/samples/*.png
fi
exec build/server/vitfit classify --model "$model" "$@"
