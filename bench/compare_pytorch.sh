#!/usr/bin/env bash
# vitfit vs PyTorch (torchvision vit_b_16), ViT-B/16 fp32, same machine, same run.
# Dev-only: needs python3-torch and python3-torchvision from Debian.
#   bench/compare_pytorch.sh [BUILD_DIR] [THREADS] [ITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
threads=${2:-2}
iters=${3:-5}
ninja -C "$build" server/vitfit >/dev/null
printf '%-6s %14s %14s %8s\n' batch "vitfit img/s" "pytorch img/s" ratio
for b in 1 8; do
  # both from the median batch time (vitfit's images_per_second is wall-clock throughput)
  v=$("$build"/server/vitfit bench --preset vit-b16 --batch "$b" --threads "$threads" \
        --iters "$iters" --json | python3 -c "import json,sys; print($b / json.load(sys.stdin)['median_batch_seconds'])")
  p=$(/usr/bin/python3 bench/pytorch_vit.py --threads "$threads" --iters "$iters" "$b" |
        python3 -c "import json,sys; print($b / json.load(sys.stdin)['median_batch_seconds'])")
  python3 -c "print(f'{$b:<6} {$v:14.2f} {$p:14.2f} {$v/$p:8.2f}')"
done
