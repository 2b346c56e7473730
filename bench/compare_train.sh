#!/usr/bin/env bash
# vitfit bench --train vs PyTorch (torchvision vit_b_16, 10-class head, AdamW),
# ViT-B/16 fp32 at batch 32, one process per method so peak RSS is per method.
# Dev-only: needs python3-torch and python3-torchvision from Debian.
#   [METHODS="bitfit linear full"] bench/compare_train.sh [BUILD_DIR] [THREADS] [ITERS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
iters=${3:-2}
batch=${4:-32}
ninja -C "$build" server/vitfit >/dev/null
field() { python3 -c "import json,sys; j=json.load(sys.stdin); print(j['$1'])"; }
printf '%-7s %12s %12s %7s %14s %14s %14s\n' method "vitfit img/s" "torch img/s" ratio \
  "vitfit RSS MB" "torch RSS MB" "vitfit acts MB"
for m in ${METHODS:-bitfit linear full}; do
  v=$("$build"/server/vitfit bench --train --method "$m" --preset vit-b16 --batch "$batch" \
        --threads "$threads" --iters "$iters" --warmup 1 --json)
  p=$(/usr/bin/python3 bench/pytorch_train.py --method "$m" --batch "$batch" \
        --threads "$threads" --iters "$iters")
  python3 - "$m" "$v" "$p" <<'PY'
import json, sys
m, v, p = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{m:<7} {v['images_per_second']:12.2f} {p['images_per_second']:12.2f} "
      f"{v['images_per_second'] / p['images_per_second']:7.2f} {v['peak_rss_bytes'] / 2**20:14.0f} "
      f"{p['peak_rss_bytes'] / 2**20:14.0f} {v['activation_bytes'] / 2**20:14.0f}")
PY
done
