#!/usr/bin/env bash
# vitfit vs ONNX Runtime vs PyTorch: ViT-B/16 fp32 inference, random weights, same machine,
# same run, batches 1, 8 and 32, 2 threads each.  Prints one table of median images/s and
# the ratios vitfit / other (> 1: vitfit is faster).  Dev-only.
#
#   bench/compare_runtimes.sh [BUILD_DIR]          (BUILD_DIR defaults to build)
#
# Environment (all optional):
#   THREADS=2        threads for every implementation
#   ITERS=5          timed iterations at batch 1 and 8 (after 1 warm-up)
#   ITERS_B32=3      timed iterations at batch 32
#   BATCHES="1 8 32"
#   ROUNDS=1         rounds per batch size: every implementation runs once per round, and the
#                    table gives the median over rounds of its images/s and of each ratio taken
#                    within a round (a host whose speed drifts by 10% between minutes moves one
#                    round's ratios, not the median of three)
#
# Implementations:
#   vitfit       BUILD_DIR/server/vitfit bench --preset vit-b16 --classes 1000 (torchvision's
#                head size; built here if needed)
#   vitfit bf16  the same with --precision bf16: a row only on CPUs with avx512_bf16 (elsewhere
#                "n/a"; BF16_EMULATE=1 times the emulation instead, which is not a speed figure)
#   onnxruntime  npm onnxruntime-node (CPU EP, graph optimisations all, intra-op THREADS,
#                inter-op 1) running torchvision vit_b_16 exported by bench/onnx/export_vit.py
#   torch+omp    bench/pytorch_vit.py on Debian's OpenMP OpenBLAS (libopenblas0-openmp, picked
#                through LD_LIBRARY_PATH for that process only): PyTorch's fastest setting here
#   torch        the same on the default (pthreads) OpenBLAS, for reference
# Implementations run interleaved per batch size so that a change in machine load hits all of
# them alike; the load average is printed before and after.  Per-run JSON lines go to stderr.
#
# First run does the one-time setup (idempotent, skipped when already done):
#   meson setup BUILD_DIR (if BUILD_DIR has no build.ninja), ninja -C BUILD_DIR server/vitfit
#   bench/vitfit-peak (the host's FMA ceilings, printed with the table),
#   apt-get install libopenblas0-openmp (if missing; sudo when not root),
#   npm ci/install --ignore-scripts in bench/onnx (the install script wants a network; the
#   linux-x64 native binary ships inside the npm tarball), and the ONNX export (~330 MB,
#   git-ignored, re-exported when export_vit.py is newer than it).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
threads=${THREADS:-2}
iters=${ITERS:-5}
iters_b32=${ITERS_B32:-3}
batches=${BATCHES:-"1 8 32"}
rounds=${ROUNDS:-1}
py=/usr/bin/python3 # Debian's python3-torch / python3-torchvision, not a pyenv/venv python
onnx_dir=bench/onnx
onnx_model=$onnx_dir/vit_b_16.onnx

die() { echo "compare_runtimes.sh: $*" >&2; exit 1; }
note() { echo "compare_runtimes.sh: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found; $2"; }
for n in "$threads" "$iters" "$iters_b32" "$rounds" $batches; do
  [[ $n =~ ^[1-9][0-9]*$ ]] ||
    die "THREADS, ITERS, ITERS_B32, ROUNDS and BATCHES want positive integers (got '$n')"
done

# --- prerequisites ---------------------------------------------------------------------------
need ninja "install ninja-build"
need node "install Node.js (>= 18)"
need npm "install npm"
[[ -x $py ]] || die "$py not found; install python3"
"$py" -c 'import torch, torchvision' 2>/dev/null ||
  die "$py cannot import torch/torchvision; apt-get install python3-torch python3-torchvision"

# vitfit
if [[ ! -f $build/build.ninja ]]; then
  need meson "install meson (or pass an existing BUILD_DIR)"
  note "no $build/build.ninja: meson setup $build"
  meson setup "$build" >&2 || die "meson setup $build failed"
fi
if ! log=$(ninja -C "$build" server/vitfit bench/vitfit-peak 2>&1); then
  echo "$log" >&2
  die "ninja -C $build server/vitfit bench/vitfit-peak failed"
fi
vitfit=$build/server/vitfit
[[ -x $vitfit ]] || die "$vitfit missing after the build"

# OpenMP OpenBLAS for the torch+omp runs
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null ||
  echo x86_64-linux-gnu)
omp_dir=/usr/lib/$multiarch/openblas-openmp
if [[ ! -e $omp_dir/libblas.so.3 ]]; then
  note "$omp_dir missing: apt-get install -y libopenblas0-openmp"
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get install -y libopenblas0-openmp >&2 ||
    die "could not install libopenblas0-openmp (try: ${sudo[*]} apt-get update first)"
  [[ -e $omp_dir/libblas.so.3 ]] || die "libopenblas0-openmp installed but $omp_dir/libblas.so.3 missing"
fi
# The directory of the libblas.so.3 a torch process really maps (proves LD_LIBRARY_PATH works).
blas_of() {
  "$py" -c 'import os, torch
print(" ".join(sorted({os.path.dirname(l.split()[-1]) for l in open("/proc/self/maps")
                       if l.rstrip().endswith("/libblas.so.3")})) or "?")'
}
blas_omp=$(LD_LIBRARY_PATH=$omp_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} blas_of)
blas_default=$(blas_of)
[[ $blas_omp == "$omp_dir" ]] ||
  die "torch does not pick up $omp_dir through LD_LIBRARY_PATH (maps: $blas_omp)"

# onnxruntime-node
ort_pkg=$onnx_dir/node_modules/onnxruntime-node
if [[ ! -f $ort_pkg/package.json ]]; then
  note "installing onnxruntime-node into $onnx_dir (npm, --ignore-scripts)"
  if [[ -f $onnx_dir/package-lock.json ]]; then
    (cd "$onnx_dir" && npm ci --ignore-scripts --no-audit --no-fund >&2) || die "npm ci in $onnx_dir failed"
  else
    (cd "$onnx_dir" && npm install --ignore-scripts --no-audit --no-fund onnxruntime-node >&2) ||
      die "npm install onnxruntime-node in $onnx_dir failed"
  fi
fi
case $(uname -m) in x86_64) ort_arch=x64 ;; aarch64) ort_arch=arm64 ;; *) ort_arch=$(uname -m) ;; esac
compgen -G "$ort_pkg/bin/napi-v*/linux/$ort_arch/onnxruntime_binding.node" >/dev/null ||
  die "no prebuilt onnxruntime_binding.node for linux/$ort_arch in $ort_pkg/bin (the npm tarball should carry it)"
ort_version=$(node -p "require('./$ort_pkg/package.json').version")

if [[ ! -s $onnx_model || $onnx_dir/export_vit.py -nt $onnx_model ]]; then
  note "exporting torchvision vit_b_16 to $onnx_model"
  "$py" "$onnx_dir/export_vit.py" "$onnx_model" >&2 || die "ONNX export failed"
fi

# --- runs ------------------------------------------------------------------------------------
# Each runner prints one JSON line with median_batch_seconds for batch $1 and $2 timed iterations.
run_vitfit() {
  "$vitfit" bench --preset vit-b16 --classes 1000 --batch "$1" --threads "$threads" --iters "$2" \
    --warmup 1 --json
}
run_vitfit_bf16() {
  "$vitfit" bench --preset vit-b16 --classes 1000 --batch "$1" --threads "$threads" --iters "$2" \
    --warmup 1 --precision bf16 --json
}
run_ort() { node "$onnx_dir/bench.mjs" "$onnx_model" --threads "$threads" --iters "$2" --warmup 1 "$1"; }
run_torch_omp() {
  LD_LIBRARY_PATH=$omp_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    "$py" bench/pytorch_vit.py --threads "$threads" --iters "$2" "$1"
}
run_torch() { "$py" bench/pytorch_vit.py --threads "$threads" --iters "$2" "$1"; }
# images/s from the median batch time, the one estimator every runner reports (vitfit's own
# images_per_second is wall-clock throughput, which the others do not measure)
ips() {
  "$py" -c 'import json,sys; print(int(sys.argv[1]) / json.loads(sys.stdin.read().strip().splitlines()[-1])["median_batch_seconds"])' "$1"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
torch_version=$("$py" -c 'import torch; print(torch.__version__)')
t_start=$SECONDS
declare -A result
impls="vitfit vitfit_bf16 ort torch_omp torch"
bf16_note="vdpbf16ps"
if ! grep -qw avx512_bf16 /proc/cpuinfo; then
  if [[ ${BF16_EMULATE:-0} == 1 ]]; then
    export VITFIT_BF16_EMULATE=1
    bf16_note="EMULATED (no avx512_bf16 here): not a speed figure"
  else
    impls="vitfit ort torch_omp torch"
    bf16_note="n/a: this CPU has no avx512_bf16"
  fi
fi
for b in $batches; do
  n=$iters
  ((b < 32)) || n=$iters_b32
  for ((r = 1; r <= rounds; r++)); do
    for impl in $impls; do
      note "batch $b, round $r of $rounds: $impl ($n timed iterations)"
      out=$("run_$impl" "$b" "$n") || die "$impl failed at batch $b"
      echo "$out" >&2
      v=$(ips "$b" <<<"$out") || die "no median_batch_seconds from $impl at batch $b"
      result[$impl,$b]+="${result[$impl,$b]:+,}$v" # one images/s per round
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
peak=$("$build/bench/vitfit-peak" "$threads") || peak="peak: n/a"

# --- table -----------------------------------------------------------------------------------
echo "ViT-B/16 fp32, random weights, $threads threads; median images/s (ratio = vitfit / other)"
echo "machine: $cpu, $(nproc) cores; load average before $load_before, after $load_after; $((SECONDS - t_start)) s"
echo "onnxruntime-node $ort_version; torch $torch_version; BLAS: torch+omp $blas_omp, torch $blas_default"
echo "timed iterations: $iters (b < 32), $iters_b32 (b >= 32), after 1 warm-up; $rounds round(s)"
echo "bf16: $bf16_note"
echo "$peak"
printf '%-5s %8s %12s %7s %10s %7s %10s %7s %8s %9s %8s\n' \
  batch vitfit onnxruntime ratio torch+omp ratio torch ratio bf16 bf16/fp32 bf16/ort
for b in $batches; do
  # each argument: one implementation's images/s, one per round, comma-separated
  "$py" - "$b" "${result[vitfit,$b]}" "${result[ort,$b]}" "${result[torch_omp,$b]}" \
    "${result[torch,$b]}" "${result[vitfit_bf16,$b]:-}" <<'PY'
import statistics, sys
b = sys.argv[1]
v, o, p, d, h = ([float(x) for x in a.split(",")] if a else [] for a in sys.argv[2:])
med = statistics.median
# a ratio is taken within each round, then the median over rounds
ratio = lambda x, y: med(a / c for a, c in zip(x, y))
row = f"{b:<5} {med(v):8.2f} {med(o):12.2f} {ratio(v, o):7.2f} {med(p):10.2f} {ratio(v, p):7.2f}"
row += f" {med(d):10.2f} {ratio(v, d):7.2f}"
row += f" {med(h):8.2f} {ratio(h, v):9.2f} {ratio(h, o):8.2f}" if h else f" {'n/a':>8} {'':>9} {'':>8}"
print(row)
if len(v) > 1:
    per = lambda x, y: " ".join(f"{a / c:.2f}" for a, c in zip(x, y))
    print(f"      rounds: vitfit/ort {per(v, o)}" + (f"; bf16/ort {per(h, o)}" if h else ""))
PY
done
