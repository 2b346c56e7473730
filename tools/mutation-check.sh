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
# from/to are literal (no regex, no escapes; one space after the colon is
# dropped, the rest kept).
#
# How: one scratch copy of the committed tree plus your uncommitted changes to
# tracked files (`git stash create`, `git archive`), one release build in it,
# then per mutant: check `from` occurs exactly once (else STALE), plant it,
# rebuild (failure: BUILD-FAILED), `meson test --num-processes 2` (fails:
# KILLED, passes: SURVIVED), put the file back.  Prints a table; exits 1 if
# any mutant SURVIVED, is STALE or does not build (it then guards nothing),
# 2 on bad usage or when the unmutated suite already fails.
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
ids=() descs=() files=() froms=() tos=() origins=()
parse_errors=0

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
    else
      for seen in "${ids[@]}"; do
        if [ "$seen" = "$cur_id" ]; then
          echo "mutation-check: $cur_origin: id '$cur_id' is used twice" >&2
          parse_errors=$((parse_errors + 1))
        fi
      done
      ids+=("$cur_id") descs+=("$cur_desc") files+=("$cur_file") froms+=("$cur_from")
      tos+=("$cur_to") origins+=("$cur_origin")
    fi
  fi
  cur_id="" cur_desc="" cur_file="" cur_from="" cur_to="" cur_has_from=0 cur_has_to=0
  cur_origin=""
}

# Value after "key:" with one leading space dropped.
field_value() { local v=${1#*:}; printf '%s' "${v# }"; }

read_mutant_file() { # path
  local path=$1 line n=0
  cur_id="" cur_desc="" cur_file="" cur_from="" cur_to="" cur_has_from=0 cur_has_to=0
  cur_origin=""
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
      *) echo "mutation-check: $path:$n: not a '# id:', file:, from: or to: line: $line" >&2
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
    printf '%-28s %-30s %s\n' "${ids[$i]}" "${files[$i]}" "${descs[$i]}"
  done
  exit 0
fi

# ---- the scratch copy and its build
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

build="$scratch/build"
log="$scratch/step.log"
if ! meson setup "$build" "$scratch" --buildtype=release >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "mutation-check: meson setup failed" >&2
  exit 2
fi
if ! ninja -C "$build" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "mutation-check: the unmutated tree does not build" >&2
  exit 2
fi
run_tests() {
  meson test -C "$build" --no-rebuild --num-processes 2 "${meson_args[@]}" >"$log" 2>&1
}
if [ "$baseline" = 1 ]; then
  t0=$SECONDS
  if ! run_tests; then
    grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)' "$log" >&2
    echo "mutation-check: the suite fails without any mutant; fix that first" >&2
    exit 2
  fi
  echo "baseline: the unmutated suite passes ($((SECONDS - t0)) s)"
fi

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
  t0=$SECONDS
  result=""
  if [ ! -f "$target" ]; then
    result="STALE (no file $file)"
  else
    n=$(FROM=${froms[$i]} count_literal "$target")
    [ "$n" = 1 ] || result="STALE (from: occurs $n times in $file)"
  fi
  if [ -z "$result" ]; then
    cp -p "$target" "$scratch/original"
    FROM=${froms[$i]} TO=${tos[$i]} replace_literal "$scratch/original" "$scratch/mutated"
    if cmp -s "$scratch/original" "$scratch/mutated"; then
      result="STALE (to: equals from:)"
    else
      cat "$scratch/mutated" >"$target"
      if ! ninja -C "$build" >"$log" 2>&1; then
        result="BUILD-FAILED"
        grep -m 3 -E 'error' "$log" | sed 's/^/    /'
      elif run_tests; then
        result="SURVIVED"
      else
        result="KILLED"
      fi
      cat "$scratch/original" >"$target" # put it back (new mtime: rebuilt next time)
    fi
  fi
  case $result in KILLED) ;; *) bad=$((bad + 1)) ;; esac
  results[i]=$result
  times[i]=$((SECONDS - t0))
  printf '%-28s %-14s %4ss  %s\n' "$id" "${result%% *}" "${times[$i]}" "${descs[$i]}"
done
ninja -C "$build" >/dev/null 2>&1 # leave the kept copy built as it is

echo
echo "== mutation check: ${#selected[@]} mutants =="
printf '%-28s %-32s %-10s %s\n' "id" "file" "time" "result"
for i in "${selected[@]}"; do
  printf '%-28s %-32s %-10s %s\n' "${ids[$i]}" "${files[$i]}" "${times[$i]}s" "${results[$i]}"
done
killed=0
for i in "${selected[@]}"; do [ "${results[$i]}" = KILLED ] && killed=$((killed + 1)); done
echo "$killed killed, $bad not killed (survived, stale or not building)"
[ "$bad" -eq 0 ]
