#!/usr/bin/env bash
# docker_files: what can be checked of docker/ without a container engine (these machines
# have none, and no registry to pull debian:bookworm from), against the vitfit just built:
#   - every shared library vitfit needs (readelf NEEDED) comes from a Debian package the
#     runtime stage installs, or from libc6 / libgcc-s1 (in every Debian image);
#   - every VITFIT_* variable the image sets is a config key `vitfit serve` accepts;
#   - the HEALTHCHECK command exists and takes the flags it is given;
#   - every path the Dockerfile and compose.yaml copy or build from exists.
# Usage: check_docker.sh SOURCE_ROOT VITFIT_BIN
set -uo pipefail
root=$1 bin=$2
dockerfile=$root/docker/Dockerfile compose=$root/docker/compose.yaml
failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

[ -f "$dockerfile" ] || { echo "FAIL: $dockerfile missing"; exit 1; }
[ -f "$compose" ] || fail "$compose missing"

# the runtime stage: everything after the last FROM
runtime=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$dockerfile")
# its apt-get install line(s), continuation lines joined
packages=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' <<<"$runtime" |
  sed -n 's/.*apt-get install -y --no-install-recommends\([^&]*\).*/\1/p' | tr -s ' ' '\n' |
  grep -v '^$')
[ -n "$packages" ] || fail "no apt-get install in the runtime stage"

command -v readelf >/dev/null && command -v dpkg >/dev/null || {
  echo "FAIL: readelf and dpkg are needed"
  exit 1
}
# a sanitizer build links its runtime (libasan, libtsan) that no release image carries
needed=""
case ${VIT_TEST_SANITIZE:-none} in
  none | "") needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') ;;
  *) echo "note: a ${VIT_TEST_SANITIZE} build: its libraries are not the image's; not compared" ;;
esac
[ -n "$needed" ] || [ "${VIT_TEST_SANITIZE:-none}" != none ] ||
  fail "readelf found no NEEDED libraries in $bin"
for lib in $needed; do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64|x86_64|AArch64/ {print $NF; exit}')
  [ -n "$path" ] || path=$(ldd "$bin" | awk -v l="$lib" '$1 == l {print $3; exit}')
  [ -n "$path" ] || { fail "$lib: not found on this machine"; continue; }
  real=$(readlink -f "$path")
  # merged /usr: dpkg may know the file by its /lib path
  pkg=$(dpkg -S "$real" "${real#/usr}" 2>/dev/null | head -1 | cut -d: -f1)
  [ -n "$pkg" ] || { fail "$lib ($real): no Debian package owns it"; continue; }
  # in every Debian image: the C library and libgcc (both needed by the Essential set)
  case $pkg in libc6 | libgcc-s1) continue ;; esac
  if ! grep -qx "$pkg" <<<"$packages"; then
    fail "$lib comes from $pkg, which the runtime stage does not install (it installs: $(echo $packages))"
  fi
done

help=$("$bin" serve --help 2>&1) || fail "vitfit serve --help failed"
for var in $(grep -o 'VITFIT_[A-Z0-9_]*' "$dockerfile" "$compose" | cut -d: -f2 | sort -u); do
  case $var in VITFIT_WITH_FUZZ) continue ;; esac # install-deps.sh's, in the build stage
  grep -q "($var)" <<<"$help" || fail "$var is not a config key of vitfit serve"
done

health=$(sed -n 's/.*CMD \["vitfit", "health"\(.*\)\]/\1/p' "$dockerfile" | tr -d '",')
[ -n "$(grep HEALTHCHECK "$dockerfile")" ] && [ -n "$health" ] || fail "no HEALTHCHECK through vitfit health"
hhelp=$("$bin" health --help) || fail "vitfit health --help failed"
for flag in $health; do
  case $flag in --*) grep -q -- "$flag" <<<"$hhelp" || fail "vitfit health has no $flag" ;; esac
done

grep -q '^USER ' <<<"$runtime" || fail "the runtime stage runs as root (no USER)"
grep -q '^EXPOSE ' <<<"$runtime" || fail "no EXPOSE"
grep -q '^VOLUME ' <<<"$runtime" || fail "no VOLUME for data_dir"
while read -r src; do
  [ -e "$root/$src" ] || fail "COPY source $src missing"
done < <(sed -n 's/^COPY \(--from=[^ ]* \)\{0\}\([^-][^ ]*\) .*/\2/p' "$dockerfile" | grep -v '^\.$')
for p in $(sed -n 's/^COPY --from=build \/src\/\([^ ]*\) .*/\1/p' "$dockerfile"); do
  [ -e "$root/$p" ] || fail "COPY --from=build /src/$p: $p is not in the source tree"
done
df=$(sed -n 's/^ *dockerfile: *//p' "$compose")
[ -z "$df" ] || [ -f "$root/$df" ] || fail "compose.yaml builds from $df, which is missing"

echo "docker files: $failed failure(s)"
[ "$failed" -eq 0 ]
