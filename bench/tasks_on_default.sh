#!/bin/bash
# tasks_on_default.sh - new tasks trained on top of a backbone (by default the bundled model)
# with bitfit, linear and full side by side, for its README: each with `vitfit train`'s
# defaults and only --train given, scored by `vitfit eval` on a test split no run sees.
#
# usage: bench/tasks_on_default.sh [MODEL_DIR] [WORK_DIR]
#   (defaults: models/fashion-vit-tiny, /tmp/vitfit-tasks-on-default; BUILD=build)
#
# Data (tools/make_study_datasets.py, dev-only: python3-sklearn and Debian's fonts):
#   digits   sklearn's 8x8 handwritten digits, 10 classes, 1258 train / 539 test
#   letters  A-Z rendered from Debian's TrueType fonts, 26 classes, tested on unseen fonts
# Prints a markdown table: set, method, test top-1, best epoch / epochs run, seconds.
set -eu
cd "$(dirname "$0")/.."
MODEL=${1:-models/fashion-vit-tiny}
WORK=${2:-/tmp/vitfit-tasks-on-default}
BUILD=${BUILD:-build}
VITFIT=$BUILD/server/vitfit
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" --buildtype=release >/dev/null
ninja -C "$BUILD" server/vitfit >/dev/null
mkdir -p "$WORK/out"
[ -d "$WORK/data/letters" ] || /usr/bin/python3 tools/make_study_datasets.py "$WORK/data"

echo "| set | method | test top-1 | best epoch / run | train seconds |"
echo "|---|---|---|---|---|"
for set_ in digits letters; do
  for method in bitfit linear full; do
    out=$WORK/out/$set_-$method
    rm -rf "$out" "$out.safetensors"
    if [ "$method" = full ]; then dest=$out; else dest=$out.safetensors; fi
    "$VITFIT" train --model "$MODEL" --train "$WORK/data/$set_/train" --method "$method" \
      --out "$dest" --allow-outside-root --log-every 0 >"$out.json"
    if [ "$method" = full ]; then evalm=(--model "$dest"); else evalm=(--model "$MODEL" --task "$dest"); fi
    "$VITFIT" eval "${evalm[@]}" --data "$WORK/data/$set_/test" --allow-outside-root --json \
      >"$out.eval.json"
    /usr/bin/python3 - "$set_" "$method" "$out.json" "$out.eval.json" <<'PY'
import json, sys
set_, method, train, ev = sys.argv[1:]
t = json.load(open(train))
e = json.load(open(ev))
print("| %s | %s | %.2f%% | %d / %d | %.0f |" % (set_, method, 100 * e["top1"], t["best_epoch"],
                                             t["epochs_run"], t["seconds"]))
PY
  done
done
