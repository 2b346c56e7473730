#!/usr/bin/env bash
# Dev-only: the Debian packages tools/reference/*.py need to regenerate the
# committed goldens and fuzz seeds (PyTorch and torchvision for the numerics,
# numpy, PIL for image decoding references, scikit-image for
# gen_image_goldens.py).  CI and the build never need them.
set -euo pipefail
pkgs=(python3-torch python3-torchvision python3-numpy python3-pil python3-skimage)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
