#!/usr/bin/env bash
# Mutation check (a dev tool; CI does not run it): plants each recorded bug
# ("mutant") in a scratch copy of the repository, one at a time, and checks
# that the test suite fails.  A mutant the suite lets through is a hole in the
# tests.
#
#   tools/mutation-check.sh [options] [MUTANT_FILE | ID]...
#
# Every tools/mutants/*.txt is read; with no arguments every mutant runs, else
# every mutant of each file named (which may live elsewhere) and each mutant
# id named.  Options:
#   --suite NAME   run only this meson test suite (repeatable; default: all)
#   --test NAME    run only this test (repeatable), e.g. --test cli
#   --list         print the mutants and exit
#   --keep         keep the scratch copy (its path is printed)
#   --no-baseline  skip the unmutated run that proves the suite passes first
#
# Mutant files hold blocks separated by blank lines:
#   # <id>: <what the planted bug is>
#   file: engine/trainer.c
#   from: <exact text on ONE line, occurring exactly once in that file>
#   to: <replacement text>
# and optionally, for a bug only a sanitizer or a few tests can see:
#   build: tsan          release (default), asan (ASan+UBSan) or tsan
#                        (ThreadSanitizer); each kind is built once, lazily
#   tests: serving task  run only these tests for this mutant (they override
#                        --test/--suite); a tsan/asan build then builds only
#                        these tests' programs and server/vitfit
#   timeout: 120         seconds for this mutant's test run; a run cut off by
#                        it counts as KILLED (timeout) -- for lost wake-ups
# from/to are literal (no regex, no escapes; one space after the colon is
# dropped, the rest kept).
#
# How: one scratch copy of the committed tree plus your uncommitted changes to
# tracked files (`git stash create`, `git archive`), one release build in it,
# then per mutant: check `from` occurs exactly once (else STALE), plant it,
# rebuild (failure: BUILD-FAILED), `meson test --num-processes 2` (fails:
# KILLED, passes: SURVIVED), put the file back.  The tests are judged as
# test.sh judges them: VITFIT_NO_AVX512 is unset, and on a CPU with AVX-512 a
# skipped test (exit 77) is a failure.  Before the first mutant of each
# build kind and test selection, the unmutated tests must pass (the baseline).
# Prints a table; exits 1 if any mutant SURVIVED, is STALE or does not build
# (it then guards nothing), 2 on bad usage or when an unmutated run fails.
# Takes about one suite run per mutant; run it with `nice` on a shared machine.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$PWD

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

meson_args=()
selectors=()
list_only=0
keep=0
baseline=1
while [ $# -gt 0 ]; do
  case $1 in
    --suite) [ $# -ge 2 ] || { usage >&2; exit 2; }; meson_args+=(--suite "$2"); shift 2 ;;
    --test) [ $# -ge 2 ] || { usage >&2; exit 2; }; meson_args+=("$2"); shift 2 ;;
    --list) list_only=1; shift ;;
    --keep) keep=1; shift ;;
    --no-baseline) baseline=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "mutation-check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) selectors+=("$1"); shift ;;
  esac
done

# ---- read the mutant files
ids=() descs=() files=() froms=() tos=() origins=() kinds=() testsels=() timeouts=()
parse_errors=0

reset_block() {
  cur_id="" cur_desc="" cur_file="" cur_from="" cur_to="" cur_has_from=0 cur_has_to=0
  cur_origin="" cur_build="" cur_tests="" cur_timeout=""
}

# Adds the block collected in cur_* (if any) to the lists.
flush_block() {
  # a block with neither file:, from: nor to: is a comment paragraph
  if [ -n "$cur_file" ] || [ "$cur_has_from" = 1 ] || [ "$cur_has_to" = 1 ]; then
    local missing=""
    [ -n "$cur_id" ] || missing+=" id"
    [ -n "$cur_file" ] || missing+=" file"
    [ "$cur_has_from" = 1 ] && [ -n "$cur_from" ] || missing+=" from"
    [ "$cur_has_to" = 1 ] || missing+=" to"
    if [ -n "$missing" ]; then
      echo "mutation-check: $cur_origin: block lacks:$missing" >&2
      parse_errors=$((parse_errors + 1))
    elif ! [[ "${cur_build:-release}" =~ ^(release|asan|tsan)$ ]]; then
      echo "mutation-check: $cur_origin: build: must be release, asan or tsan" >&2
      parse_errors=$((parse_errors + 1))
    elif [ -n "$cur_timeout" ] && ! [[ "$cur_timeout" =~ ^[1-9][0-9]*$ ]]; then
      echo "mutation-check: $cur_origin: timeout: must be a number of seconds" >&2
      parse_errors=$((parse_errors + 1))
    else
      for seen in "${ids[@]}"; do
        if [ "$seen" = "$cur_id" ]; then
          echo "mutation-check: $cur_origin: id '$cur_id' is used twice" >&2
          parse_errors=$((parse_errors + 1))
        fi
      done
      ids+=("$cur_id") descs+=("$cur_desc") files+=("$cur_file") froms+=("$cur_from")
      tos+=("$cur_to") origins+=("$cur_origin") kinds+=("${cur_build:-release}")
      testsels+=("$cur_tests") timeouts+=("$cur_timeout")
    fi
  fi
  reset_block
}

# Value after "key:" with one leading space dropped.
field_value() { local v=${1#*:}; printf '%s' "${v# }"; }

read_mutant_file() { # path
  local path=$1 line n=0
  reset_block
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%$'\r'}
    if [[ -z "${line//[[:space:]]/}" ]]; then
      flush_block
      continue
    fi
    [ -n "$cur_origin" ] || cur_origin="$path:$n"
    case $line in
      "#"*)
        if [ -z "$cur_id" ] && [[ "$line" =~ ^#[[:space:]]*([A-Za-z0-9._-]+):[[:space:]]*(.*)$ ]]; then
          cur_id=${BASH_REMATCH[1]}
          cur_desc=${BASH_REMATCH[2]}
        fi ;; # other comment lines are notes
      file:*) cur_file=$(field_value "$line") ;;
      from:*) cur_from=$(field_value "$line"); cur_has_from=1 ;;
      to:*) cur_to=$(field_value "$line"); cur_has_to=1 ;;
      build:*) cur_build=$(field_value "$line") ;;
      tests:*) cur_tests=$(field_value "$line") ;;
      timeout:*) cur_timeout=$(field_value "$line") ;;
      *) echo "mutation-check: $path:$n: not a '# id:', file:, from:, to:, build:, tests: or timeout: line: $line" >&2
         parse_errors=$((parse_errors + 1)) ;;
    esac
  done <"$path"
  flush_block
}

# every tools/mutants/*.txt, plus files named on the command line
mutant_files=()
wanted_files=()
wanted_ids=()
for f in tools/mutants/*.txt; do [ -e "$f" ] && mutant_files+=("$f"); done
for s in "${selectors[@]}"; do
  if [ -f "$s" ]; then
    wanted_files+=("$s")
    known=0
    for f in "${mutant_files[@]}"; do [ "$f" -ef "$s" ] && known=1; done
    [ "$known" = 1 ] || mutant_files+=("$s")
  else
    wanted_ids+=("$s")
  fi
done
[ ${#mutant_files[@]} -gt 0 ] || { echo "mutation-check: no tools/mutants/*.txt" >&2; exit 2; }
for f in "${mutant_files[@]}"; do read_mutant_file "$f"; done
[ "$parse_errors" -eq 0 ] || { echo "mutation-check: fix the mutant files first" >&2; exit 2; }

# the subset asked for: every mutant of the files named, and the ids named
selected=()
if [ ${#selectors[@]} -eq 0 ]; then
  for i in "${!ids[@]}"; do selected+=("$i"); done
else
  for i in "${!ids[@]}"; do
    take=0
    for f in "${wanted_files[@]}"; do [ "${origins[$i]%:*}" -ef "$f" ] && take=1; done
    for w in "${wanted_ids[@]}"; do [ "${ids[$i]}" = "$w" ] && take=1; done
    [ "$take" = 1 ] && selected+=("$i")
  done
  for w in "${wanted_ids[@]}"; do
    found=0
    for i in "${!ids[@]}"; do [ "${ids[$i]}" = "$w" ] && found=1; done
    [ "$found" = 1 ] || { echo "mutation-check: no mutant file or id '$w'" >&2; exit 2; }
  done
fi
[ ${#selected[@]} -gt 0 ] || { echo "mutation-check: no mutants to run" >&2; exit 2; }

if [ "$list_only" = 1 ]; then
  for i in "${selected[@]}"; do
    printf '%-28s %-7s %-30s %s\n' "${ids[$i]}" "${kinds[$i]}" "${files[$i]}" "${descs[$i]}"
  done
  exit 0
fi

# The tests are judged as test.sh judges them (see there): never on the
# portable path by accident, and a skip on an AVX-512 CPU is no pass.
unset VITFIT_NO_AVX512 VITFIT_TEST_FAIL_THREAD
avx512_cpu=0
if grep -qw avx512f /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo &&
    grep -qw avx512bw /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo; then
  avx512_cpu=1
fi

# ---- the scratch copy
scratch=$(mktemp -d "${TMPDIR:-/tmp}/vitfit-mutation.XXXXXX") || exit 2
cleanup() {
  if [ "$keep" = 1 ]; then echo "scratch copy kept: $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM # so that cleanup runs
snapshot=$(git -C "$repo" stash create 2>/dev/null)
[ -n "$snapshot" ] || snapshot=HEAD
if ! git -C "$repo" archive --format=tar "$snapshot" | tar -x -C "$scratch"; then
  echo "mutation-check: cannot copy the repository" >&2
  exit 2
fi
untracked=$(git -C "$repo" ls-files --others --exclude-standard | head -n 5)
[ -z "$untracked" ] ||
  echo "note: untracked files are not in the scratch copy (git add them to include): $untracked" >&2
echo "scratch copy of $(git -C "$repo" rev-parse --short HEAD)$([ "$snapshot" != HEAD ] &&
  echo ' + uncommitted changes') in $scratch"
log="$scratch/step.log"

# ---- the builds: one directory per kind, set up when first needed
declare -A set_up=() baseline_done=()

# meson setup args of a build kind (the same as test.sh's stages).
setup_args() {
  case $1 in
    release) echo --buildtype=release ;;
    asan) echo --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false ;;
    tsan) echo --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false ;;
  esac
}

# ninja targets for mutant i: everything for a release build or when no
# tests: are named; else the named tests' programs and the binaries they
# start (tests/unit/test_NAME.c is test NAME; see tests/unit/meson.build).
build_targets() { # i
  local t
  [ "${kinds[$1]}" != release ] && [ -n "${testsels[$1]}" ] || return 0
  echo server/vitfit tests/unit/vitfit_failstart
  for t in ${testsels[$1]}; do
    [ -f "$scratch/tests/unit/test_$t.c" ] && echo "tests/unit/test_$t"
  done
}

# Sets up build kind $1 once; exits 2 if that fails.
ensure_setup() { # kind
  [ -n "${set_up[$1]:-}" ] && return 0
  # shellcheck disable=SC2046 # setup_args is a word list
  if ! meson setup "$scratch/build-$1" "$scratch" $(setup_args "$1") >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "mutation-check: meson setup of the $1 build failed" >&2
    exit 2
  fi
  set_up[$1]=1
}

build_for() { # i
  # shellcheck disable=SC2046
  ninja -C "$scratch/build-${kinds[$1]}" $(build_targets "$1") >"$log" 2>&1
}

# Runs mutant i's tests (unmutated for the baseline); returns 0 when they
# pass.  Sets run_note: why they failed when it was not a plain test failure.
run_tests() { # i
  local i=$1 dir="$scratch/build-${kinds[$1]}" args=() rc
  run_note=""
  if [ -n "${testsels[$i]}" ]; then
    # shellcheck disable=SC2206 # a list of test names
    args=(${testsels[$i]})
  else
    args=("${meson_args[@]}")
  fi
  [ "${kinds[$i]}" = release ] || args=(--timeout-multiplier=3 "${args[@]}")
  local limit=()
  [ -n "${timeouts[$i]}" ] && limit=(timeout -k 10 "${timeouts[$i]}")
  rm -f "$dir/meson-logs/testlog.json"
  "${limit[@]}" meson test -C "$dir" --no-rebuild --num-processes 2 "${args[@]}" >"$log" 2>&1
  rc=$?
  if [ -n "${timeouts[$i]}" ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then
    run_note="timeout ${timeouts[$i]}s"
    return 1
  fi
  if [ "$rc" = 0 ] && [ "$avx512_cpu" = 1 ] && grep -q '"result": "SKIP"' "$dir/meson-logs/testlog.json"; then
    run_note="a test skipped on an AVX-512 CPU"
    return 1
  fi
  [ "$rc" = 0 ] && return 0
  if grep -q 'WARNING: ThreadSanitizer' "$dir/meson-logs/testlog.txt" 2>/dev/null; then
    run_note="TSan report"
  elif grep -qE 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' \
      "$dir/meson-logs/testlog.txt" 2>/dev/null; then
    run_note="ASan/UBSan report"
  fi
  return 1
}

# The unmutated tests of mutant i's build kind and selection must pass
# (once per kind and selection); exits 2 if they do not.
ensure_baseline() { # i
  local i=$1 key="${kinds[$1]}|${testsels[$1]}" t0=$SECONDS
  [ "$baseline" = 1 ] && [ -z "${baseline_done[$key]:-}" ] || return 0
  baseline_done[$key]=1
  if ! build_for "$i"; then
    tail -n 30 "$log" >&2
    echo "mutation-check: the unmutated tree does not build (${kinds[$i]})" >&2
    exit 2
  fi
  if ! run_tests "$i"; then
    grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR|SKIP)' "$log" >&2
    echo "mutation-check: the unmutated tests fail (${kinds[$i]} build, tests: ${testsels[$i]:-all}${run_note:+; $run_note}); fix that first" >&2
    exit 2
  fi
  echo "baseline (${kinds[$i]}, tests: ${testsels[$i]:-${meson_args[*]:-all}}): the unmutated tests pass ($((SECONDS - t0)) s)"
}

# Occurrences of the literal $FROM in a file (non-overlapping).
count_literal() {
  awk 'BEGIN { f = ENVIRON["FROM"]; n = 0 }
       { s = $0; while ((i = index(s, f)) > 0) { n++; s = substr(s, i + length(f)) } }
       END { print n }' "$1"
}
# Replaces the first literal $FROM by $TO.
replace_literal() { # in, out
  awk 'BEGIN { f = ENVIRON["FROM"]; t = ENVIRON["TO"] }
       !done && (i = index($0, f)) > 0 { $0 = substr($0, 1, i - 1) t substr($0, i + length(f)); done = 1 }
       { print }' "$1" >"$2"
}

# ---- plant, build, test, restore
results=() times=()
bad=0
for i in "${selected[@]}"; do
  id=${ids[$i]} file=${files[$i]}
  target="$scratch/$file"
  result=""
  if [ ! -f "$target" ]; then
    result="STALE (no file $file)"
  else
    n=$(FROM=${froms[$i]} count_literal "$target")
    [ "$n" = 1 ] || result="STALE (from: occurs $n times in $file)"
  fi
  if [ -z "$result" ]; then
    ensure_setup "${kinds[$i]}"
    ensure_baseline "$i"
  fi
  t0=$SECONDS
  if [ -z "$result" ]; then
    cp -p "$target" "$scratch/original"
    FROM=${froms[$i]} TO=${tos[$i]} replace_literal "$scratch/original" "$scratch/mutated"
    if cmp -s "$scratch/original" "$scratch/mutated"; then
      result="STALE (to: equals from:)"
    else
      cat "$scratch/mutated" >"$target"
      if ! build_for "$i"; then
        result="BUILD-FAILED"
        grep -m 3 -E 'error' "$log" | sed 's/^/    /'
      elif run_tests "$i"; then
        result="SURVIVED"
      else
        result="KILLED${run_note:+ ($run_note)}"
      fi
      cat "$scratch/original" >"$target" # put it back (new mtime: rebuilt next time)
    fi
  fi
  case $result in KILLED*) ;; *) bad=$((bad + 1)) ;; esac
  results[i]=$result
  times[i]=$((SECONDS - t0))
  printf '%-28s %-7s %-14s %4ss  %s\n' "$id" "${kinds[$i]}" "${result%% *}" "${times[$i]}" "${descs[$i]}"
done
if [ "$keep" = 1 ]; then # leave a kept copy built as it is
  for kind in "${!set_up[@]}"; do ninja -C "$scratch/build-$kind" >/dev/null 2>&1; done
fi

echo
echo "== mutation check: ${#selected[@]} mutants =="
printf '%-28s %-7s %-32s %-10s %s\n' "id" "build" "file" "time" "result"
for i in "${selected[@]}"; do
  printf '%-28s %-7s %-32s %-10s %s\n' "${ids[$i]}" "${kinds[$i]}" "${files[$i]}" "${times[$i]}s" "${results[$i]}"
done
killed=0
for i in "${selected[@]}"; do
  case ${results[$i]} in KILLED*) killed=$((killed + 1)) ;; esac
done
echo "$killed killed, $bad not killed (survived, stale or not building)"
[ "$bad" -eq 0 ]
