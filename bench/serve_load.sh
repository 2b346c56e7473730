#!/usr/bin/env bash
# Load benchmark of `vitfit serve` against `vitfit bench` on the same model, same machine, same run.
#   bench/serve_load.sh [MODEL] [--b16] [--out FILE]
# MODEL defaults to the bundled models/fashion-vit-tiny; --b16 also measures a ViT-B/16-shaped
# checkpoint (`vitfit init --preset vit-b16 --classes 1000`, made once into BUILD_DIR/bench-cache).
# For each model: starts `vitfit serve --model MODEL --port 0` on 127.0.0.1, and at concurrency 1, 8
# and 32 runs vitfit-loadgen (raw image POSTs to /v1/classify) next to `vitfit bench` at the matching
# batch (1, then MAX_BATCH). Prints one markdown table per model; raw JSON lines go to stderr.
# Environment: BUILD_DIR (build), IMAGE (tests/data/images/chelsea.png), MAX_BATCH (8, the server's
# max_batch), REQUESTS (2000 per concurrency), DURATION (30 s cap per concurrency), ITERS (5, of
# vitfit bench), SERVE_ARGS (extra `vitfit serve` flags), VITFIT (the binary; default
# BUILD_DIR/server/vitfit, built first). All traffic goes to 127.0.0.1.
set -euo pipefail
py=/usr/bin/python3

model=""
out=""
b16=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "serve_load.sh: --out needs a FILE" >&2; exit 2; }
           out=$(realpath -m -- "$2"); shift 2 ;;
    --b16) b16=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "serve_load.sh: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$model" ] || { echo "serve_load.sh: one MODEL only" >&2; exit 2; }
       model=$(realpath -- "$1"); shift ;;
  esac
done
cd "$(dirname "$0")/.."
model=${model:-$PWD/models/fashion-vit-tiny}
build=${BUILD_DIR:-build}
image=$(realpath -- "${IMAGE:-tests/data/images/chelsea.png}")
max_batch=${MAX_BATCH:-8}
requests=${REQUESTS:-2000}
duration=${DURATION:-30}
iters=${ITERS:-5}
read -r -a serve_args <<<"${SERVE_ARGS:-}"

[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
ninja -C "$build" server/vitfit bench/vitfit-loadgen >/dev/null
build=$(realpath -- "$build")
vitfit=${VITFIT:-$build/server/vitfit}
loadgen=$build/bench/vitfit-loadgen

tmp=$(mktemp -d /tmp/vitfit-serve-load-XXXXXX)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() { stop_server; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the server on MODEL; sets server_pid and port.  Waits (up to 300 s: a large model loads
# and packs first) for its one "vitfit: listening on http://127.0.0.1:PORT" line.
start_server() {
  local m=$1 line="" i
  rm -rf "$tmp/data" && mkdir "$tmp/data"
  : >"$tmp/serve.out"
  "$vitfit" serve --model "$m" --port 0 --data-dir "$tmp/data" "${serve_args[@]}" \
    >"$tmp/serve.out" 2>"$tmp/serve.err" &
  server_pid=$!
  for ((i = 0; i < 3000; i++)); do
    if [ "$(wc -l <"$tmp/serve.out")" -ge 1 ]; then # a whole line
      line=$(head -n 1 "$tmp/serve.out")
      break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "serve_load.sh: vitfit serve exited before listening:" >&2
      cat "$tmp/serve.err" >&2
      server_pid=""
      exit 1
    fi
    sleep 0.1
  done
  if [[ ! $line =~ ^vitfit:\ listening\ on\ http://127\.0\.0\.1:([0-9]+)$ ]]; then
    echo "serve_load.sh: expected 'vitfit: listening on http://127.0.0.1:PORT', got '$line'" >&2
    cat "$tmp/serve.err" >&2
    exit 1
  fi
  port=${BASH_REMATCH[1]}
}

# Field $2 of the JSON object $1.
field() { $py -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# Measures one model; appends its table to $tmp/report.md.
measure() {
  local m=$1 name=$2 c b lg en
  echo "measuring $name ..." >&2
  start_server "$m"
  : >"$tmp/rows.jsonl"
  for c in 1 8 32; do
    if [ "$c" -eq 1 ]; then b=1; else b=$max_batch; fi
    # the client first, with the server otherwise idle; then the engine with the server idle
    lg=$("$loadgen" --url "http://127.0.0.1:$port/v1/classify" --body "$image" \
           --content-type image/png --concurrency "$c" --requests "$requests" \
           --duration "$duration" --warmup $((2 * c))) || {
      echo "serve_load.sh: vitfit-loadgen failed at concurrency $c: $lg" >&2; exit 1; }
    echo "$lg" >&2
    en=$("$vitfit" bench --model "$m" --batch "$b" --iters "$iters" --json)
    echo "$en" >&2
    printf '{"c":%s,"b":%s,"server":%s,"engine":%s}\n' "$c" "$b" "$lg" "$en" >>"$tmp/rows.jsonl"
  done
  stop_server
  $py - "$name" "$tmp/rows.jsonl" >>"$tmp/report.md" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path)]
print(f"\n### {name}\n")
print("| concurrency | server req/s | p50 ms | p99 ms | engine img/s at batch B | engine latency ms "
      "| server/engine ratio | added latency at c=1 |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
notes = []
for r in rows:
    s, e = r["server"], r["engine"]
    rps, lat = s["rps"], s["latency_ms"]
    # engine: images/s and latency from the median batch time (as bench/compare_pytorch.sh)
    batch_ms = 1e3 * e["median_batch_seconds"]
    eips = r["b"] / e["median_batch_seconds"]
    added = f"{lat['p50'] - batch_ms:.2f} ms" if r["c"] == 1 else ""
    print(f"| {r['c']} | {rps:.1f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {eips:.1f} (B={r['b']}) "
          f"| {batch_ms:.2f} | {rps / eips:.2f} | {added} |")
    if s["errors"]:
        notes.append(f"concurrency {r['c']}: {s['ok']} of {s['requests']} ok, errors {json.dumps(s['errors'])}")
for n in notes:
    print(f"\n{n}")
EOF
}

{
  echo "## vitfit serve under load ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "$(nproc) usable CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Image: $(basename "$image") raw to /v1/classify; up to $requests requests or ${duration} s per concurrency."
} >"$tmp/report.md"

measure "$model" "$(basename "$model")"
if [ "$b16" = 1 ]; then
  b16_dir=$build/bench-cache/vit-b16-init
  if [ ! -d "$b16_dir" ]; then
    mkdir -p "$build/bench-cache"
    "$vitfit" init --preset vit-b16 --classes 1000 --seed 0 --out "$b16_dir" >&2
  fi
  measure "$b16_dir" "ViT-B/16 shape (vitfit init --preset vit-b16 --classes 1000)"
fi
echo >>"$tmp/report.md"
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$tmp/report.md"

cat "$tmp/report.md"
[ -z "$out" ] || cp "$tmp/report.md" "$out"
