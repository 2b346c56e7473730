# npm-ci-once.sh - sourced by the scripts that run pinned npm packages (tests/web/run.sh,
# tests/k8s/run.sh, tools/openapi/lint.sh): one way to install them.
#
#   npm_ci_once WHO SRC_DIR NPM_DIR PROBE
#
# Installs SRC_DIR's package.json and package-lock.json (and .npmrc when there is one) into
# NPM_DIR with `npm ci` -- once: a copy of those files kept beside node_modules says which were
# installed, so a changed lockfile installs again and an unchanged one never touches the
# network.  PROBE, a path under NPM_DIR, must exist after an install (a half-made directory
# installs again).  Install scripts do not run (--ignore-scripts).  Returns non-zero, with a
# line on stderr, when npm or the registry fails; WHO names the caller in messages.
npm_ci_once() {
  local who=$1 src=$2 dir=$3 probe=$4 files=("$2/package.json" "$2/package-lock.json")
  [ ! -f "$src/.npmrc" ] || files+=("$src/.npmrc")
  local stamp=$dir/installed-from
  if cat "${files[@]}" | cmp -s - "$stamp" && [ -e "$dir/$probe" ]; then
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "${files[@]}" "$dir/"
  echo "$who: npm ci (${src#"${VITFIT_SOURCE_ROOT:-}"/}/package-lock.json) into $dir" >&2
  if ! (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error); then
    echo "$who: npm ci failed: the npm registry must be reachable for the first run" >&2
    return 1
  fi
  cat "${files[@]}" >"$stamp"
}
