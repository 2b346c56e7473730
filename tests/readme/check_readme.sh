#!/usr/bin/env bash
# readme_commands: README.md's commands, run so the README cannot rot.
#   - Every ```sh block is marked, on the line before its fence, with who runs it:
#     quick-start and cli-example (this script), serve-start / serve-example
#     (tests/api/test_api_readme.c), hub-example (tests/api/test_api_hub.c), or
#     `not-run: REASON` for what no test can run here (a container engine, the
#     suite running itself); an unmarked block fails.
#   - quick-start: `./run.sh` from an empty data directory serves the try-it page and
#     the bundled model, and the quick start's curl gets each sample's own label back;
#     `./run.sh classify` labels every bundled sample correctly; `./test.sh` is what
#     .ci/run runs.
#   - cli-example: the train + classify example runs and classifies the trouser as one.
#   - The synopsis of `vitfit COMMAND` lists exactly the flags of `vitfit COMMAND --help`.
# A sanitizer build makes the static checks only (the commands run in the release stage).
# Usage: check_readme.sh SOURCE_ROOT BUILD_ROOT VITFIT_BIN
set -uo pipefail
root=$1 build=$2 bin=$3
readme=$root/README.md
failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
tmp=$(mktemp -d)
server=""
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# The body of the ```sh block after the line "<!-- MARK -->" (first match).
block() {
  awk -v mark="<!-- $1 -->" '
    $0 == mark { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$readme"
}

# A sample's label as its file name spells it: "Ankle boot" -> ankle_boot.
slug() { tr 'A-Z' 'a-z' <<<"$1" | sed 's/[^a-z0-9]\{1,\}/_/g; s/^_//; s/_$//'; }

# ---- every block is marked ---------------------------------------------------
unmarked=$(awk '
  /^```sh/ { if (prev !~ /^<!-- (quick-start|quick-start-curl|cli-example|serve-start|serve-example|hub-example|not-run: .+) -->$/)
               printf "line %d\n", NR }
  { prev = $0 }' "$readme")
[ -z "$unmarked" ] || fail "README.md: sh blocks no test runs and none says why not: $unmarked"
# what a block no test runs names must still exist
while read -r path; do
  [ -e "$root/$path" ] || fail "README.md: a not-run block names $path, which does not exist"
done < <(awk '/^<!-- not-run: / { armed = 1; next }
              armed && /^```/ { if (inside) { armed = inside = 0 } else inside = 1; next }
              inside { print }' "$readme" |
  grep -oE '(^|[[:space:]])(tools|tests|docker|bench|models)/[A-Za-z0-9_./-]*[A-Za-z0-9_]' |
  tr -d ' \t' | sort -u)
for mark in quick-start quick-start-curl cli-example; do
  [ -n "$(block "$mark")" ] || fail "README.md has no $mark block"
done

# ---- the synopsis and --help agree --------------------------------------------
synopsis=$(awk '/^## The `vitfit` command/ { on = 1 } on && /^```$/ { n++; if (n == 2) exit; next }
                on && n == 1 { print }' "$readme")
[ -n "$synopsis" ] || fail "README.md: no vitfit synopsis block"
commands=$(sed -n 's/^vitfit \([a-z]*\).*/\1/p' <<<"$synopsis")
[ -n "$commands" ] || fail "the synopsis names no command"
for cmd in $commands; do
  listed=$(awk -v c="$cmd" '/^vitfit / { on = ($2 == c) } on' <<<"$synopsis" |
    grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
  helped=$("$bin" "$cmd" --help 2>&1 | grep -o -- '^ *--[a-z][a-z0-9-]*' | tr -d ' ' | sort -u)
  [ -n "$helped" ] || { fail "vitfit $cmd --help lists no flag"; continue; }
  extra=$(comm -23 <(echo "$listed") <(echo "$helped") | grep -vx -- '--help')
  [ -z "$extra" ] || fail "README synopsis of $cmd names flags --help does not: $extra"
  # serve has a flag per config key; its synopsis names the common ones only
  if [ "$cmd" != serve ]; then
    missing=$(comm -13 <(echo "$listed") <(echo "$helped") | grep -vx -- '--help')
    [ -z "$missing" ] || fail "README synopsis of $cmd omits flags --help lists:" $missing
  fi
done

# the quick start: ./run.sh serves, ./test.sh is what CI runs
quick=$(block quick-start)
grep -q '^\./run\.sh\b' <<<"$quick" || fail "quick-start does not run ./run.sh"
grep -q '^\./test\.sh\b' <<<"$quick" || fail "quick-start does not name ./test.sh"
grep -q '^[^#]*\./test\.sh' "$root/.ci/run" || fail ".ci/run does not run ./test.sh"

# The commands run in plain builds only: run.sh builds and serves a release binary, and
# the example trains, which under a sanitizer takes minutes to test nothing new.
if [ "${VIT_TEST_SANITIZE:-none}" != none ]; then
  echo "note: a ${VIT_TEST_SANITIZE} build: the commands are run in the release stage"
  [ $failed -eq 0 ] && echo "readme_commands: ok" && exit 0
  exit 1
fi

# ---- the CLI example ---------------------------------------------------------
# /tmp first: the binary may itself live under /tmp (a clean clone there)
example=$(block cli-example | sed "s#/tmp/#$tmp/#g; s#build/server/vitfit#$bin#g")
if out=$(cd "$root" && sh -ec "$example" 2>"$tmp/cli.err"); then
  top=$(awk '/^  [0-9.]+  / { print $2; exit }' <<<"$out")
  [ "$top" = trouser ] || fail "cli-example: the trouser sample came out as '$top': $out"
else
  fail "cli-example failed: $(tail -n 3 "$tmp/cli.err")"
fi

# ---- the quick start ---------------------------------------------------------
# BUILD: run.sh's build directory, this test's own, so run.sh finds it built
mkdir -p "$tmp/data"
(cd "$root" && BUILD=$build exec ./run.sh --port 0 --data-dir "$tmp/data") >"$tmp/serve.out" \
  2>"$tmp/serve.err" &
server=$!
port=""
for _ in $(seq 600); do # up to 60 s: run.sh checks the packages and the build first
  port=$(sed -n 's#^vitfit: listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$tmp/serve.out")
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  fail "./run.sh did not start serving: $(tail -n 5 "$tmp/serve.err")"
else
  base=http://127.0.0.1:$port
  page=$(curl -s --max-time 10 "$base/")
  grep -q '<title>' <<<"$page" || fail "./run.sh: GET / is not the page: ${page:0:200}"
  for _ in $(seq 100); do # the model loads after the socket opens
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/readyz")" = 200 ] && break
    sleep 0.1
  done
  # the quick start's curl, then the same for every sample
  curl_cmd=$(block quick-start-curl)
  [ -n "$curl_cmd" ] || fail "README.md has no quick-start-curl block"
  for png in "$root"/models/fashion-vit-tiny/samples/*.png; do
    name=$(basename "$png")
    cmd=$(sed "s#http://127.0.0.1:8080#$base#g; s#samples/[^ ]*\.png#samples/$name#" <<<"$curl_cmd")
    reply=$(cd "$root" && sh -ec "$cmd" 2>/dev/null)
    label=$(sed -n 's/.*"labels":\["\([^"]*\)".*/\1/p' <<<"$reply")
    want=$(sed 's/^[0-9]*_//; s/\.png$//' <<<"$name")
    [ "$(slug "$label")" = "$want" ] || fail "quick start: $name came back as '$label': $reply"
  done
  kill "$server"
  wait "$server" 2>/dev/null
  server=""
  [ -z "$(ls -A "$tmp/data/tasks" 2>/dev/null)" ] || fail "./run.sh put tasks in an empty data dir"
fi
# ./run.sh classify: the bundled samples, each its own label
out=$(cd "$root" && BUILD=$build ./run.sh classify 2>"$tmp/classify.err") ||
  fail "./run.sh classify: $(tail -n 3 "$tmp/classify.err")"
n=0
while read -r file label; do
  n=$((n + 1))
  want=$(basename "$file" .png | sed 's/^[0-9]*_//')
  [ "$(slug "$label")" = "$want" ] || fail "./run.sh classify: $(basename "$file") came out as '$label'"
done < <(awk '/\.png$/ { file = $1; getline; sub(/^ *[0-9.]+ +/, ""); print file, $0 }' <<<"$out")
samples=$(ls "$root"/models/fashion-vit-tiny/samples/*.png | wc -l)
[ "$n" -eq "$samples" ] || fail "./run.sh classify printed $n results for $samples samples"

[ $failed -eq 0 ] && echo "readme_commands: ok" && exit 0
echo "readme_commands: $failed failure(s)"
exit 1
