#!/usr/bin/env bash
# One command that runs every test: the suite in a gcc release build (and its
# engine tests again on the portable, non-AVX-512 path), a clang build, again
# under ASan+UBSan, the threaded tests under
# TSan, and the libFuzzer targets for a fixed number of runs.  Ends with
# the line "N passed, N failed"; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")"
tools/install-deps.sh || exit 1

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
passed=0
failed=0

# meson's testlog.json has one JSON object per test
count_log() {
  python3 - "$1" <<'PY'
import json, sys
ok = bad = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["result"] in ("OK", "EXPECTEDFAIL", "SKIP"):
        ok += 1
    else:
        bad += 1
        print(f"FAILED: {r['name']} ({r['result']})", file=sys.stderr)
print(ok, bad)
PY
}

run_suite() { # dir, setup args...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null 2>&1 || { failed=$((failed + 1)); return; }
  fi
  if ! ninja -C "$dir" >/dev/null; then
    echo "build failed in $dir" >&2
    ninja -C "$dir" 2>&1 | tail -30 >&2
    failed=$((failed + 1))
    return
  fi
  meson test -C "$dir" --print-errorlogs --num-processes 2 || true
  read -r ok bad < <(count_log "$dir/meson-logs/testlog.json")
  passed=$((passed + ok))
  failed=$((failed + bad))
}

echo "== release build =="
run_suite build --buildtype=release
if command -v clang >/dev/null; then
  echo "== clang build =="
  CC=clang run_suite build-clang --buildtype=release
fi
echo "== portable path: VITFIT_NO_AVX512=1 (OpenBLAS GEMMs, scalar kernels) =="
if [ -f build/meson-logs/testlog.json ]; then
  VITFIT_NO_AVX512=1 meson test -C build --print-errorlogs --num-processes 2 \
    --logbase testlog-portable vit gemm serving task cli || true
  read -r ok bad < <(count_log build/meson-logs/testlog-portable.json)
  passed=$((passed + ok))
  failed=$((failed + bad))
fi
echo "== ASan + UBSan build =="
run_suite build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false

echo "== ThreadSanitizer: the threaded tests =="
if [ ! -f build-tsan/build.ninja ]; then
  meson setup build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false \
    >/dev/null 2>&1
fi
if ninja -C build-tsan tests/unit/test_serving tests/unit/test_dataset tests/unit/test_gemm \
    >/dev/null; then
  for t in serving dataset gemm; do
    if VITFIT_SOURCE_ROOT="$PWD" TSAN_OPTIONS=halt_on_error=1 \
        build-tsan/tests/unit/test_$t >"build-tsan/test_$t.log" 2>&1; then
      echo "tsan test_$t: ok"; passed=$((passed + 1))
    else
      echo "tsan test_$t: FAILED"; tail -40 "build-tsan/test_$t.log"; failed=$((failed + 1))
    fi
  done
else
  echo "TSan build failed" >&2; failed=$((failed + 1))
fi

if command -v clang >/dev/null && [ "${VITFIT_WITH_FUZZ:-1}" = 1 ]; then
  echo "== libFuzzer targets (fixed seed, bounded runs) =="
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true --buildtype=debugoptimized \
      -Db_sanitize=address,undefined -Db_lundef=false >/dev/null 2>&1
  fi
  if ninja -C build-fuzz tests/fuzz/fuzz_safetensors tests/fuzz/fuzz_image tests/fuzz/fuzz_dataset >/dev/null; then
    for t in safetensors image dataset; do
      corpus=$(mktemp -d)
      cp tests/fuzz/corpus/$t/* "$corpus"/
      if build-fuzz/tests/fuzz/fuzz_$t -seed=1 -runs=20000 -max_total_time=60 -max_len=65536 "$corpus" \
          >"build-fuzz/fuzz_$t.log" 2>&1; then
        echo "fuzz_$t: ok"; passed=$((passed + 1))
      else
        echo "fuzz_$t: FAILED"; tail -40 "build-fuzz/fuzz_$t.log"; failed=$((failed + 1))
      fi
      rm -rf "$corpus"
    done
  else
    echo "fuzz build failed" >&2; failed=$((failed + 1))
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
