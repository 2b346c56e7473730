#!/usr/bin/env bash
# Classify latency while a fine-tune job trains, and the job's speed against `vitfit train` alone.
#   bench/finetune_load.sh [--out FILE]
# For each serve_reserved_threads value in RESERVED ("0 1"): starts `vitfit serve` on the bundled
# model with a data_dir whose datasets/fm holds Fashion-MNIST's 10k test split (IDX, copied from
# Debian's dataset-fashion-mnist), measures classify (raw PNG, concurrency CONCURRENCY) with no job,
# then submits a BitFit job on datasets/fm and measures classify again while it trains, reading the
# job's images/s from GET /v1/finetune/{id}; cancels the job.  Then runs `vitfit train` alone on
# the same data, same batch, with the same number of BLAS threads as the job had, for its images/s.
# Prints one markdown table.  Environment: BUILD_DIR (build), IMAGE (tests/data/images/chelsea.png),
# CONCURRENCY (1), REQUESTS (1000), DURATION (20 s per measurement), BATCH (32), RESERVED ("0 1").
# All traffic goes to 127.0.0.1.
set -euo pipefail
py=/usr/bin/python3

out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "finetune_load.sh: --out needs a FILE" >&2; exit 2; }
           out=$(realpath -m -- "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "finetune_load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
image=$(realpath -- "${IMAGE:-tests/data/images/chelsea.png}")
concurrency=${CONCURRENCY:-1}
requests=${REQUESTS:-1000}
duration=${DURATION:-20}
batch=${BATCH:-32}
reserved_list=${RESERVED:-"0 1"}
fm=/usr/share/datasets/fashion-mnist
[ -f "$fm/t10k-images-idx3-ubyte.gz" ] || {
  echo "finetune_load.sh: needs Debian's dataset-fashion-mnist" >&2; exit 1; }

[ -f "$build/build.ninja" ] || meson setup "$build" --buildtype=release >/dev/null
ninja -C "$build" server/vitfit bench/vitfit-loadgen >/dev/null
build=$(realpath -- "$build")
vitfit=$build/server/vitfit
loadgen=$build/bench/vitfit-loadgen
model=$PWD/models/fashion-vit-tiny

tmp=$(mktemp -d /tmp/vitfit-finetune-load-XXXXXX)
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

# Starts the server with serve_reserved_threads $1; sets server_pid and port.
start_server() {
  local line="" i
  rm -rf "$tmp/data" && mkdir -p "$tmp/data/datasets/fm"
  cp "$fm"/t10k-*.gz "$tmp/data/datasets/fm/"
  : >"$tmp/serve.out"
  "$vitfit" serve --model "$model" --port 0 --data-dir "$tmp/data" \
    --serve-reserved-threads "$1" >"$tmp/serve.out" 2>"$tmp/serve.err" &
  server_pid=$!
  for ((i = 0; i < 600; i++)); do
    if [ "$(wc -l <"$tmp/serve.out")" -ge 1 ]; then line=$(head -n 1 "$tmp/serve.out"); break; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.err" >&2; exit 1; }
    sleep 0.1
  done
  [[ $line =~ ^vitfit:\ listening\ on\ http://127\.0\.0\.1:([0-9]+)$ ]] || {
    echo "finetune_load.sh: the server did not start: $line" >&2; cat "$tmp/serve.err" >&2; exit 1; }
  port=${BASH_REMATCH[1]}
}

classify_load() {
  "$loadgen" --url "http://127.0.0.1:$port/v1/classify" --body "$image" --content-type image/png \
    --concurrency "$concurrency" --requests "$requests" --duration "$duration" --warmup 10
}

job_field() { # job id, python expression over the job object j
  curl -sf "http://127.0.0.1:$port/v1/finetune/$1" | $py -c "import json,sys; j=json.load(sys.stdin); print($2)"
}

: >"$tmp/rows.jsonl"
for reserved in $reserved_list; do
  echo "serve_reserved_threads=$reserved ..." >&2
  start_server "$reserved"
  idle=$(classify_load)
  echo "$idle" >&2
  id=$(curl -sf -X POST "http://127.0.0.1:$port/v1/finetune" -H 'Content-Type: application/json' \
         -d "{\"task\":\"bench\",\"train\":\"fm/t10k-images-idx3-ubyte.gz\",\"epochs\":50,\"batch_size\":$batch,\"augment\":\"none\"}" |
       $py -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for ((i = 0; i < 300; i++)); do # running, and past its first progress report
    [ "$(job_field "$id" "j['status']=='running' and (j['progress']['step'] or 0) >= 5")" = True ] && break
    sleep 0.2
  done
  step0=$(job_field "$id" "j['progress']['step']"); t0=$(date +%s.%N)
  busy=$(classify_load)
  step1=$(job_field "$id" "j['progress']['step']"); t1=$(date +%s.%N)
  echo "$busy" >&2
  status=$(job_field "$id" "j['status']")
  [ "$status" = running ] || { echo "finetune_load.sh: the job is $status, not running" >&2; exit 1; }
  curl -sf -X POST "http://127.0.0.1:$port/v1/finetune/$id/cancel" >/dev/null
  job_ips=$($py -c "print(($step1 - $step0) * $batch / ($t1 - $t0))")
  stop_server
  threads=$(( $(nproc) - reserved )); [ "$threads" -ge 1 ] || threads=1
  # the same data and batch, `vitfit train` alone, as many BLAS threads as the job had
  cp "$fm"/t10k-*.gz "$tmp/" 2>/dev/null || true
  train=$("$vitfit" train --model "$model" --train "$tmp/t10k-images-idx3-ubyte.gz" \
            --out "$tmp/alone.safetensors" --batch-size "$batch" --max-steps 150 --no-augment \
            --threads "$threads" --loader-threads 1 --log-every 0 --json 2>/dev/null)
  alone_ips=$($py -c "import json,sys; t=json.loads(sys.argv[1]); print(t['steps'] * $batch / t['seconds'])" "$train")
  rm -f "$tmp/alone.safetensors"
  printf '{"reserved":%s,"threads":%s,"idle":%s,"busy":%s,"job_ips":%s,"alone_ips":%s}\n' \
    "$reserved" "$threads" "$idle" "$busy" "$job_ips" "$alone_ips" >>"$tmp/rows.jsonl"
done

{
  echo "## classify while a fine-tune job trains ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "$(nproc) usable CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); bundled model; raw PNG classify at concurrency $concurrency (up to $requests requests or ${duration} s each); BitFit job on Fashion-MNIST t10k (IDX), batch $batch, no augmentation."
  echo
  $py - "$tmp/rows.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| serve_reserved_threads | job BLAS threads | classify p50 / p99 ms, no job | req/s | p50 / p99 ms, job training | req/s | job images/s | `vitfit train` alone images/s | job / alone |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    i, b = r["idle"], r["busy"]
    print(f"| {r['reserved']} | {r['threads']} | {i['latency_ms']['p50']:.2f} / {i['latency_ms']['p99']:.2f} | {i['rps']:.1f} "
          f"| {b['latency_ms']['p50']:.2f} / {b['latency_ms']['p99']:.2f} | {b['rps']:.1f} "
          f"| {r['job_ips']:.1f} | {r['alone_ips']:.1f} | {r['job_ips'] / r['alone_ips']:.2f} |")
    for name, s in (("no job", i), ("job", b)):
        if s["errors"]:
            print(f"\n{name} (reserved {r['reserved']}): {s['ok']} of {s['requests']} ok, errors {json.dumps(s['errors'])}")
EOF
} >"$tmp/report.md"
cat "$tmp/report.md"
[ -z "$out" ] || cp "$tmp/report.md" "$out"
