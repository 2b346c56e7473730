#!/usr/bin/env bash
# The full-size learning runs behind the CI-sized ones in tests/unit/test_finetune.c:
# all 60k Fashion-MNIST training images, evaluated on all 10k test images.
#   linear / bitfit: the bundled model as a fixed backbone with a new head
#   full:            a small ViT trained from random weights
# Prints one summary line per run (held-out top-1 and wall time).
#   bench/fashion_full.sh [BUILD_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
epochs=${2:-2}
ninja -C "$build" server/vitfit >/dev/null
data=/usr/share/datasets/fashion-mnist
names=tshirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,boot
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # label model method lr extra...
  local label=$1 model=$2 method=$3 lr=$4
  shift 4
  "$build"/server/vitfit train --model "$model" --method "$method" --lr "$lr" --head new \
    --train "$data/train-images-idx3-ubyte.gz" --eval "$data/t10k-images-idx3-ubyte.gz" \
    --class-names "$names" --epochs "$epochs" --batch-size 64 --log-every 200 \
    --out "$out/$label" "$@" |
    python3 -c "import json,sys; j=json.load(sys.stdin); e=j['eval']; print(f\"$label: top-1 {e['top1']:.4f} top-5 {e['top5']:.4f} in {j['seconds']:.0f} s ({j['steps']} steps)\")"
}
run linear.safetensors models/fashion-vit-tiny linear 0.005 --no-augment
run bitfit.safetensors models/fashion-vit-tiny bitfit 0.005 --no-augment
run full-model models/fashion-vit-tiny full 0.001 --no-augment --from-scratch
