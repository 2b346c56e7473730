#!/usr/bin/env bash
# One command that runs every test, in stages:
#   release   the whole suite, gcc release build (build/)
#   portable  the engine tests again with VITFIT_NO_AVX512=1 (OpenBLAS, scalar kernels)
#   asan      the whole suite under ASan+UBSan, gcc (build-asan/), with
#             UBSan's float-to-int conversion check (-fsanitize=float-cast-
#             overflow, which -fsanitize=undefined leaves out in gcc), but for
#             the suite 'web' (the try-it page in Chromium tests the browser's
#             side, which no sanitizer sees; the server's static routes are
#             api_web, run here), the suite 'k8s' (Node.js checks of YAML files)
#             and the suite 'slow': the long numeric runs (test_finetune's accuracy
#             floors, test_trainer_resume's bit-identical resumes,
#             test_linear_probe's cached-vs-recomputed runs, test_bf16_accuracy's
#             10,000 images), minutes each here and the same code the faster
#             tests run under the sanitizer (train, train_paths, trainer,
#             trainer_validation without its training runs, cli_resume, vit_bf16, and
#             api_finetune's jobs -- a cached linear probe among them --,
#             restarts and kill -9 resume)
#   clang     the unit suite under ASan+UBSan, clang (build-clang/), after
#             building everything with clang (its warnings are errors too); but
#             for the suites 'slow' and 'long', and the API tests, which run
#             the same server code as under gcc's ASan and took the longest
#   tsan      the threaded tests under ThreadSanitizer (build-tsan/)
#   fuzz      every libFuzzer target tests/fuzz/fuzz_*.c for a bounded run (build-fuzz/)
#
# In release, asan and tsan the tests run in two lanes side by side
# (run_meson_lanes): the server tests one at a time in one, the rest one at
# a time in the other.
#
# The environment cannot turn a check off: VITFIT_NO_AVX512 is unset for
# every stage but portable (which sets it), so a user's setting never moves
# the other stages onto the portable path.
#
# Counting (no second interpreter): each `meson test` run writes a fresh
# meson-logs/<logbase>.json, one JSON object per test; awk reads each line's
# "name", "result" and "returncode".  OK counts as passed, anything but OK
# and SKIP as failed.  SKIP (exit 77) is never a pass: on a CPU with AVX-512
# F/VL/BW/DQ (where no test has a reason to skip, so a skip hides a broken
# test) and in CI it is a failure, elsewhere it is listed apart.  The counts
# must agree with the summary meson prints and with `meson test --list`; a
# missing or malformed log, any disagreement, or a non-zero `meson test` exit
# with no failed test counted is one more failure.  Every fuzz target's run
# is one test.  A setup or build that fails counts as a failure (with its
# log's tail printed).  Every tests/unit/test_NAME.c must be registered as
# the test NAME (tests/unit/meson.build): a test file meson does not know is
# a failure.
#
# Sanitizer reports exit with their own codes, never 1 (UBSan's default, the
# code most tests expect from a refused input): 86 for ASan, UBSan and LSan
# (one runtime in an ASan+UBSan build: one code), 66 for TSan.  The same
# options are in meson's test environment (tests/meson.build), and a failed
# test with one of these codes is named as a sanitizer report.
#
# Fuzzing: each target runs from its corpus with -max_len=65536, which
# truncates longer seeds; the seeds longer than that are then replayed whole,
# one by one, under the same rss, malloc and time limits.
#
# Stages not run: a developer may opt out with VITFIT_SKIP_STAGES="clang fuzz"
# (or VITFIT_WITH_FUZZ=0), or lack clang; that is printed loudly.  In CI
# (VITFIT_CI=1, set by .ci/run) every stage not run counts as a failure.
#
# Ends with the line "N passed, N failed"; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")" || exit 1

ci=0
[ "${VITFIT_CI:-0}" = 1 ] && ci=1
skip_list=" $(echo "${VITFIT_SKIP_STAGES:-}" | tr ',' ' ') "
[ "${VITFIT_WITH_FUZZ:-1}" = 1 ] || skip_list+="fuzz "

# Sanitizer options: keep in step with tests/meson.build (test_env).
export ASAN_OPTIONS=exitcode=86:halt_on_error=1:detect_leaks=1:print_stacktrace=1
export UBSAN_OPTIONS=exitcode=86:halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=exitcode=66:halt_on_error=1
# Only the portable stage runs without AVX-512, and it says so itself;
# VITFIT_TEST_FAIL_THREAD is for tests/unit/fail_pthread_create.c alone.
if [ -n "${VITFIT_NO_AVX512+set}" ]; then
  echo "note: VITFIT_NO_AVX512 is set in the environment: unset (only the portable stage sets it)" >&2
fi
unset VITFIT_NO_AVX512 VITFIT_TEST_FAIL_THREAD

# A skipped test (exit 77) fails the run where no test has a reason to skip:
# on a CPU with the AVX-512 subsets cpu_has_avx512() asks for, and in CI.
skip_fails=0
skip_why=""
if [ "$ci" = 1 ]; then
  skip_fails=1
  skip_why="in CI"
elif grep -qw avx512f /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo &&
    grep -qw avx512bw /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo; then
  skip_fails=1
  skip_why="on a CPU with AVX-512"
fi

passed=0
failed=0
failures=()     # what failed, one entry per counted failure
skipped_tests=() # tests that exited 77
not_run=()      # stages that did not run, and why
stage_report=() # one line per stage: counts and wall time

# Counts one failure and says what it was.
fail() {
  failed=$((failed + 1))
  failures+=("$1")
  echo "FAILED: $1" >&2
}

# A stage that cannot or may not run: a failure in CI, a loud notice otherwise.
stage_not_run() { # stage, reason
  not_run+=("$1 ($2)")
  if [ "$ci" = 1 ]; then
    fail "stage $1 not run in CI: $2"
  else
    echo "!!!!!!!!!! stage $1 NOT RUN: $2 -- this run does not test everything !!!!!!!!!!" >&2
  fi
}

# Is the stage opted out of by the environment?
opted_out() { [[ "$skip_list" == *" $1 "* ]]; }

# meson setup into dir, fresh unless test.sh configured it before with the
# same compiler and options (a dir set up otherwise by hand is set up again,
# so that a stage never runs with other options than it says); on failure
# prints why and counts it.  Extra args go to meson setup; CC comes from env.
setup_dir() { # stage, dir, setup args...
  local stage=$1 dir=$2 log want
  shift 2
  want="CC=${CC:-cc} $*"
  if [ -f "$dir/build.ninja" ] && [ "$(cat "$dir/.test-sh-setup" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  [ -e "$dir" ] && echo "$dir: not set up by test.sh as '$want': setting it up again"
  rm -rf "$dir"
  log=$(mktemp)
  if ! meson setup "$dir" "$@" >"$log" 2>&1; then
    echo "meson setup $dir $* failed; the end of its log:" >&2
    tail -n 30 "$log" >&2
    [ -f "$dir/meson-logs/meson-log.txt" ] && tail -n 15 "$dir/meson-logs/meson-log.txt" >&2
    rm -f "$log"
    fail "$stage: meson setup $dir"
    return 1
  fi
  rm -f "$log"
  echo "$want" >"$dir/.test-sh-setup"
}

# ninja in dir for the given targets (all by default); on failure prints the
# end of the output and counts it.
build_dir() { # stage, dir, targets...
  local stage=$1 dir=$2 log
  shift 2
  log=$(mktemp)
  if ! ninja -C "$dir" "$@" >"$log" 2>&1; then
    echo "build failed in $dir; the end of its output:" >&2
    tail -n 40 "$log" >&2
    rm -f "$log"
    fail "$stage: build in $dir"
    return 1
  fi
  rm -f "$log"
}

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }

# Adds the tests of one `meson test` run to the totals.  log: its testlog
# JSON; out: its stdout (for meson's own summary); rc: its exit code;
# expected: how many tests it was asked to run.  Any doubt is a failure.
count_meson_log() { # stage, log, out, rc, expected
  local stage=$1 log=$2 out=$3 rc=$4 expected=$5 line ok=x bad=x skip=x malformed=x
  local s_ok s_bad s_skip
  if [ ! -s "$log" ]; then
    fail "$stage: counting error: meson wrote no test log $log (meson test exit $rc)"
    return
  fi
  # One object per line; the first "name" is the test's (the line starts with
  # it) and the first "result" is the test's: both come before "env", and a
  # test's own output inside "stdout" has its quotes escaped, so cannot match.
  while IFS= read -r line; do
    case $line in
      "F "*) fail "$stage: ${line#F }" ;;
      "S "*)
        if [ "$skip_fails" = 1 ]; then
          fail "$stage: ${line#S } $skip_why, where no test may skip"
        else
          skipped_tests+=("$stage: ${line#S }")
        fi ;;
      "T "*) read -r ok bad skip malformed <<<"${line#T }" ;;
    esac
  done < <(awk '
    {
      name = ""; result = ""; code = ""
      if (match($0, /^\{"name": "[^"]*"/)) name = substr($0, 11, RLENGTH - 11)
      if (match($0, /"result": "[A-Z]+"/)) result = substr($0, RSTART + 11, RLENGTH - 12)
      if (match($0, /"returncode": -?[0-9]+/)) code = substr($0, RSTART + 14, RLENGTH - 14)
      if (name == "" || result == "") { malformed++; next }
      why = code == 86 ? ", exit 86: an ASan/UBSan/LSan report" : \
            code == 66 ? ", exit 66: a TSan report" : code != "" ? ", exit " code : ""
      if (result == "OK" || result == "EXPECTEDFAIL") ok++
      else if (result == "SKIP") { skip++; print "S " name " skipped (exit 77)" }
      else { bad++; print "F " name " (" result why ")" }
    }
    END { print "T", ok + 0, bad + 0, skip + 0, malformed + 0 }' "$log")
  if ! is_count "$ok" || ! is_count "$bad" || ! is_count "$skip" || ! is_count "$malformed"; then
    fail "$stage: counting error: could not read $log"
    return
  fi
  passed=$((passed + ok))
  # failed tests were counted one by one above; a stage's lanes add up
  stage_ok=$((stage_ok + ok)) stage_bad=$((stage_bad + bad)) stage_skip=$((stage_skip + skip))
  stage_counts="$stage_ok passed, $stage_bad failed, $stage_skip skipped"
  [ "$malformed" -eq 0 ] || fail "$stage: counting error: $malformed unreadable lines in $log"
  if [ $((ok + bad + skip)) -ne "$expected" ] || [ "$expected" -eq 0 ]; then
    fail "$stage: counting error: $((ok + bad + skip)) results in $log, $expected tests asked for"
  fi
  # meson's own summary must say the same
  read -r s_ok s_bad s_skip < <(awk '
    /^Ok:/ { o = $2; seen = 1 }  /^Expected Fail:/ { ef = $3 }  /^Fail:/ { f = $2 }
    /^Unexpected Pass:/ { up = $3 }  /^Skipped:/ { s = $2 }  /^Timeout:/ { t = $2 }
    END { if (seen) print o + ef, f + up + t, s + 0; else print "none" }' "$out")
  if [ "$s_ok" != "$ok" ] || [ "$s_bad" != "$bad" ] || [ "$s_skip" != "$skip" ]; then
    fail "$stage: counting error: meson's summary says ${s_ok:-?} ok, ${s_bad:-?} failed, ${s_skip:-?} skipped; $log says $ok, $bad, $skip"
  fi
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
    fail "$stage: meson test exited $rc though no test failed"
  elif [ "$rc" -eq 0 ] && [ "$bad" -ne 0 ]; then
    fail "$stage: counting error: meson test exited 0 though $bad tests failed"
  fi
}

# How many tests `meson test` would run in dir with these options and names.
meson_expected() { # dir, [meson test options and test names...]
  local dir=$1 a names=() select=()
  shift
  for a in "$@"; do
    case "$a" in
      --suite=* | --no-suite=*) select+=("$a") ;; # they choose tests too
      -*) ;;
      *) names+=("$a") ;;
    esac
  done
  meson test -C "$dir" --list --no-rebuild "${select[@]}" "${names[@]}" 2>/dev/null |
    grep -c ' / '
}

# Runs `meson test` in dir on the named tests (all if none) and counts them;
# meson_procs tests at a time.
meson_procs=2
run_meson_tests() { # stage, dir, logbase, [meson test options and test names...]
  local stage=$1 dir=$2 logbase=$3 expected rc out
  shift 3
  local log="$dir/meson-logs/$logbase.json"
  out="$dir/$logbase.stdout"
  rm -f "$log" "$out" # a stale log must never be counted
  expected=$(meson_expected "$dir" "$@")
  meson test -C "$dir" --print-errorlogs --num-processes "$meson_procs" --logbase "$logbase" \
    "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  count_meson_log "$stage" "$log" "$out" "$rc" "$expected"
}

# The tests in two lanes of one process each, side by side: the server
# tests (suites api and web, `is_parallel: false` in meson: never two at
# once, whose loopback servers and clients would crowd 2 cores) in one, every
# other test in the other.  Same two processes as --num-processes 2, but a
# server test no longer runs alone, which left a core idle for half a
# stage.  Test names after "--" (TSan's list) go to the server lane when
# they start with api_; without names the suites choose.  The server lane's output follows the
# other's.  dir must be built (both lanes run --no-rebuild).
run_meson_lanes() { # stage, dir, logbase, [meson test options...] -- [test names...]
  local stage=$1 dir=$2 logbase=$3 a opts=() api=() rest=() seen_sep=0
  shift 3
  for a in "$@"; do
    if [ "$a" = -- ]; then seen_sep=1
    elif [ "$seen_sep" = 0 ]; then opts+=("$a")
    elif [[ "$a" == api_* ]]; then api+=("$a")
    else rest+=("$a")
    fi
  done
  if [[ " ${opts[*]} " == *" --suite="* ]]; then # the caller chose the suites: one lane
    run_meson_tests "$stage" "$dir" "$logbase" "${opts[@]}" "${api[@]}" "${rest[@]}"
    return
  fi
  local lane_a=(--no-rebuild "${opts[@]}") lane_b=(--no-rebuild "${opts[@]}")
  if [ "$seen_sep" = 1 ]; then
    lane_a+=("${api[@]}")
    lane_b+=("${rest[@]}")
  else
    lane_a+=(--suite=api --suite=web)
    lane_b+=(--no-suite=api --no-suite=web)
  fi
  local log_a="$dir/meson-logs/$logbase-servers.json" out_a="$dir/$logbase-servers.stdout"
  local expected_a pid_a="" rc_a
  rm -f "$log_a" "$out_a"
  expected_a=0
  { [ "$seen_sep" = 0 ] || [ ${#api[@]} -gt 0 ]; } && expected_a=$(meson_expected "$dir" "${lane_a[@]}")
  if [ "$expected_a" -gt 0 ]; then
    meson test -C "$dir" --print-errorlogs --num-processes 1 --logbase "$logbase-servers" \
      "${lane_a[@]}" >"$out_a" 2>&1 &
    pid_a=$!
  fi
  if [ "$seen_sep" = 0 ] || [ ${#rest[@]} -gt 0 ]; then
    meson_procs=1 run_meson_tests "$stage" "$dir" "$logbase" "${lane_b[@]}"
  fi
  if [ -n "$pid_a" ]; then
    wait "$pid_a"
    rc_a=$?
    echo "-- the server tests' lane:"
    cat "$out_a"
    count_meson_log "$stage" "$log_a" "$out_a" "$rc_a" "$expected_a"
  fi
}

# Every tests/{unit,api}/test_NAME.c must be the test NAME in meson's list of
# dir: a test file no one registered in its meson.build would never run.
# Checked once, in the first suite stage that sets up.
registration_checked=0
check_registered() { # stage, dir
  local stage=$1 dir=$2 f name names
  registration_checked=1
  names=$(meson test -C "$dir" --list --no-rebuild 2>/dev/null | sed -n 's|^.* / ||p')
  if [ -z "$names" ]; then
    fail "$stage: counting error: meson test --list lists no test in $dir"
    return 0
  fi
  for f in tests/unit/test_*.c tests/api/test_*.c; do
    [ -e "$f" ] || continue
    name=${f##*/test_}
    name=${name%.c}
    grep -qxF "$name" <<<"$names" ||
      fail "$stage: $f is not registered: no test '$name' in ${f%/*}/meson.build"
  done
  return 0 # counted; the stage runs on
}

# Stage bookkeeping: start_stage prints a banner; end_stage records the time.
start_stage() {
  stage_t0=$SECONDS
  stage_failed0=$failed
  stage_counts="" stage_ok=0 stage_bad=0 stage_skip=0
  echo
  echo "== $1: $2 =="
}
end_stage() {
  local secs=$((SECONDS - stage_t0))
  stage_report+=("$(printf '%-9s %4ds  %s%s' "$1" "$secs" "${stage_counts:-no tests counted}" \
    "$([ "$failed" -gt "$stage_failed0" ] && echo "  [$((failed - stage_failed0)) failure(s) counted]")")")
}

# The whole suite in one build directory; stage_test_opts go to meson test.
stage_test_opts=()
suite_stage() { # stage, dir, what, setup args...
  local stage=$1 dir=$2 what=$3
  shift 3
  start_stage "$stage" "$what"
  suite_ran=0
  if setup_dir "$stage" "$dir" "$@" &&
      { [ "$registration_checked" = 1 ] || check_registered "$stage" "$dir"; } &&
      build_dir "$stage" "$dir"; then
    run_meson_lanes "$stage" "$dir" testlog "${stage_test_opts[@]}"
    suite_ran=1
  fi
  end_stage "$stage"
}

if ! tools/install-deps.sh; then
  echo "tools/install-deps.sh failed: cannot build" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
have_clang=0
command -v clang >/dev/null && have_clang=1
total_t0=$SECONDS

# ---- release
release_ok=0
if opted_out release; then
  stage_not_run release "VITFIT_SKIP_STAGES"
else
  suite_stage release build "gcc release build" --buildtype=release
  release_ok=$suite_ran # the portable stage reruns these very binaries
fi

# ---- portable: the engine tests without AVX-512
if opted_out portable; then
  stage_not_run portable "VITFIT_SKIP_STAGES"
elif [ "$release_ok" = 0 ]; then
  stage_not_run portable "the release stage did not build"
else
  start_stage portable "VITFIT_NO_AVX512=1 (OpenBLAS GEMMs, scalar kernels)"
  VITFIT_NO_AVX512=1 run_meson_tests portable build testlog-portable --no-rebuild \
    vit train train_paths serving task cli vit_bf16 last_block
  end_stage portable
fi

# ---- ASan + UBSan
if opted_out asan; then
  stage_not_run asan "VITFIT_SKIP_STAGES"
else
  # sanitizers slow the tests down 2-4x: the per-test timeouts scale with them
  stage_test_opts=(--timeout-multiplier=3 --no-suite=slow --no-suite=web --no-suite=k8s)
  suite_stage asan build-asan "ASan + UBSan build (gcc)" --buildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args=-fsanitize=float-cast-overflow -Dc_link_args=-fsanitize=float-cast-overflow
  stage_test_opts=()
fi

# ---- clang, ASan + UBSan
if opted_out clang; then
  stage_not_run clang "VITFIT_SKIP_STAGES"
elif [ "$have_clang" = 0 ]; then
  stage_not_run clang "clang is not installed"
else
  stage_test_opts=(--timeout-multiplier=3 --suite=unit --no-suite=slow --no-suite=long)
  CC=clang suite_stage clang build-clang "ASan + UBSan build (clang), unit tests but slow and long" \
    --buildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false
  stage_test_opts=()
fi

# ---- TSan: the tests that start threads
tsan_tests=(serving dataset gemm gemm_bf16 team_share train_paths task task_store threads fetch
  job_fetch api_routes api_load api_finetune job_lease task_watch api_replicas)
# api_finetune's sections that run jobs beside requests, streams and cancels;
# the rest (validation, listing, crash and restart) are single-threaded
# checks that TSan would only slow down, 4x here
tsan_finetune_skip=validation,list,crash,restart,failed,live,tamper,bf16
if opted_out tsan; then
  stage_not_run tsan "VITFIT_SKIP_STAGES"
else
  start_stage tsan "ThreadSanitizer: ${tsan_tests[*]}"
  targets=()
  for t in "${tsan_tests[@]}"; do
    if [ -e "tests/api/test_$t.c" ]; then targets+=("tests/api/test_$t"); else targets+=("tests/unit/test_$t"); fi
  done
  targets+=(server/vitfit tests/unit/vitfit_failstart) # the programs those tests start
  if setup_dir tsan build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false &&
      build_dir tsan build-tsan "${targets[@]}"; then
    TSAN_OPTIONS=halt_on_error=1 TEST_API_FINETUNE_SKIP=$tsan_finetune_skip \
      TEST_API_REPLICAS_SKIP=handover \
      run_meson_lanes tsan build-tsan testlog --timeout-multiplier=3 --no-suite=web \
      -- "${tsan_tests[@]}"
  fi
  end_stage tsan
fi

# ---- libFuzzer: every tests/fuzz/fuzz_*.c, each run is one test
fuzz_targets=()
for f in tests/fuzz/fuzz_*.c; do
  [ -e "$f" ] || continue
  t=${f#tests/fuzz/fuzz_}
  fuzz_targets+=("${t%.c}")
done
if opted_out fuzz; then
  stage_not_run fuzz "VITFIT_SKIP_STAGES / VITFIT_WITH_FUZZ=0"
elif [ "$have_clang" = 0 ]; then
  stage_not_run fuzz "clang is not installed"
else
  start_stage fuzz "libFuzzer targets: ${fuzz_targets[*]:-none} (fixed seed, bounded runs)"
  [ ${#fuzz_targets[@]} -gt 0 ] || fail "fuzz: no tests/fuzz/fuzz_*.c found"
  fuzz_ok=0
  fuzz_bad0=$failed
  fuzz_max_len=65536
  fuzz_limits=(-rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5) # a bomb fails like a crash
  if CC=clang setup_dir fuzz build-fuzz -Dfuzz=true --buildtype=debugoptimized \
      -Db_sanitize=address,undefined -Db_lundef=false; then
    mkdir -p build-fuzz/artifacts
    for t in "${fuzz_targets[@]}"; do
      if ! ninja -C build-fuzz "tests/fuzz/fuzz_$t" >"build-fuzz/fuzz_$t.build.log" 2>&1; then
        tail -n 30 "build-fuzz/fuzz_$t.build.log" >&2
        fail "fuzz: fuzz_$t does not build (is it listed in tests/fuzz/meson.build?)"
        continue
      fi
      corpus=$(mktemp -d)
      [ -d "tests/fuzz/corpus/$t" ] && cp -r "tests/fuzz/corpus/$t/." "$corpus"/
      dict=()
      with=""
      if [ -f "tests/fuzz/$t.dict" ]; then
        dict=("-dict=tests/fuzz/$t.dict")
        with=", dictionary tests/fuzz/$t.dict"
      fi
      # seeds past -max_len are cut to it in the run below: replayed whole after it
      big=()
      [ -d "tests/fuzz/corpus/$t" ] &&
        while IFS= read -r -d '' f; do big+=("$f"); done < <(find "tests/fuzz/corpus/$t" \
          -type f -size +"${fuzz_max_len}"c -print0)
      if ! "build-fuzz/tests/fuzz/fuzz_$t" -seed=1 -runs=20000 -max_total_time=30 \
          -max_len="$fuzz_max_len" "${fuzz_limits[@]}" "${dict[@]}" \
          -artifact_prefix="build-fuzz/artifacts/fuzz_$t-" "$corpus" \
          >"build-fuzz/fuzz_$t.log" 2>&1; then
        tail -n 40 "build-fuzz/fuzz_$t.log" >&2
        fail "fuzz: fuzz_$t (log: build-fuzz/fuzz_$t.log, inputs: build-fuzz/artifacts/)"
      elif [ ${#big[@]} -gt 0 ] && ! "build-fuzz/tests/fuzz/fuzz_$t" "${fuzz_limits[@]}" \
          -artifact_prefix="build-fuzz/artifacts/fuzz_$t-" "${big[@]}" \
          >"build-fuzz/fuzz_$t.big.log" 2>&1; then
        # files named one by one are run whole: no -max_len here
        tail -n 40 "build-fuzz/fuzz_$t.big.log" >&2
        fail "fuzz: fuzz_$t on its ${#big[@]} seeds longer than $fuzz_max_len bytes (log: build-fuzz/fuzz_$t.big.log)"
      else
        echo "fuzz_$t: ok ($(grep -o 'Done [0-9]* runs in [0-9]* second' "build-fuzz/fuzz_$t.log" |
          tail -n 1)s$with$([ ${#big[@]} -gt 0 ] &&
          echo ", ${#big[@]} seeds over $fuzz_max_len bytes replayed whole"))"
        passed=$((passed + 1))
        fuzz_ok=$((fuzz_ok + 1))
      fi
      rm -rf "$corpus"
    done
  fi
  stage_counts="$fuzz_ok passed, $((failed - fuzz_bad0)) failed"
  end_stage fuzz
fi

# ---- summary
[ "$passed" -gt 0 ] || fail "no test passed: nothing was tested"
echo
echo "== summary ($((SECONDS - total_t0)) s) =="
for line in "${stage_report[@]}"; do echo "  $line"; done
if [ ${#not_run[@]} -gt 0 ]; then
  echo "!!!!!!!!!! stages NOT RUN$([ "$ci" = 1 ] && echo ' (each counted as a failure in CI)'):"
  for s in "${not_run[@]}"; do echo "  $s"; done
fi
if [ ${#skipped_tests[@]} -gt 0 ]; then # skips counted as failures are listed under "failed:"
  echo "skipped tests (exit 77; counted neither as passed nor as failed): ${#skipped_tests[@]}"
  for s in "${skipped_tests[@]}"; do echo "  $s"; done
fi
if [ "$failed" -gt 0 ]; then
  echo "failed:"
  for s in "${failures[@]}"; do echo "  $s"; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
