#!/usr/bin/env bash
# Installs the Debian 12 packages vitfit builds and tests with (idempotent).
# Runs apt-get only when something is missing; uses sudo when not root.
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config
  libmicrohttpd-dev libjansson-dev libopenblas-dev libstb-dev libcurl4-openssl-dev zlib1g-dev
  curl  # tests/api/test_api_readme runs the README's curl examples
  dataset-fashion-mnist
  libyaml-dev  # tests only: tests/api/openapi_check.c reads api/openapi.yaml
)
# tests/web (the try-it page in headless Chromium, driven by puppeteer-core,
# which npm installs from tests/web/package-lock.json), tools/openapi/lint.sh
# (Redocly CLI, from tools/openapi/package-lock.json) and tests/k8s (kubectl and
# the Kubernetes schemas, from tests/k8s/package-lock.json).  Installed by default;
# VITFIT_WITH_BROWSER=0 (run.sh, which only serves) leaves them out.  A
# Node.js from elsewhere (NodeSource's package provides npm and conflicts
# with Debian's) has npm already.
if [ "${VITFIT_WITH_BROWSER:-1}" = 1 ]; then
  packages+=(chromium nodejs)
  command -v npm >/dev/null || packages+=(npm)
  packages+=(unzip) # tests/k8s/run.sh: kubectl comes zipped inside an npm package
fi
# test.sh's clang stage (ASan+UBSan under clang) and fuzz stage need clang and
# its runtime: libclang_rt.{asan,ubsan_standalone,fuzzer}-x86_64.a come from
# libclang-rt-14-dev (`dpkg -S`), which clang-14 only recommends (through
# libclang-common-14-dev), so with --no-install-recommends it must be named.
# Installed by default; VITFIT_WITH_FUZZ=0 (run.sh, the quick start) leaves
# them out, and test.sh then reports those two stages as not run.
if [ "${VITFIT_WITH_FUZZ:-1}" = 1 ]; then
  packages+=(clang libclang-rt-14-dev)
fi
# The golden and seed generators (tools/reference/*.py, dev-only; CI never
# runs them): VITFIT_WITH_REFERENCE=1 adds PyTorch, torchvision, numpy, PIL
# and scikit-image (gen_image_goldens.py).
if [ "${VITFIT_WITH_REFERENCE:-0}" = 1 ]; then
  packages+=(python3-torch python3-torchvision python3-numpy python3-pil python3-skimage)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
