#!/bin/sh
# Thread oversubscription on one CPU (issue 13 item 13): runs two vitfit
# binaries (a baseline and a candidate, e.g. an older commit's build and this
# one) pinned to CPU 0 with `taskset -c 0`, interleaved, at batch 8, for
# vit-tiny and the bundled model with the default threads, --threads 1,
# --threads 2 and --workers 2; prints medians and candidate/baseline ratios.
#
#   bench/pinned_threads.sh BASELINE_VITFIT [CANDIDATE_VITFIT] [ROUNDS]
#
# images/s is batch x workers / median batch time, the estimator every
# version of `vitfit bench --json` reports the inputs for.
set -eu
cd "$(dirname "$0")/.."
base=$1
cand=${2:-build/server/vitfit}
rounds=${3:-7}
out=$(mktemp)
trap 'rm -f "$out"' EXIT INT TERM
model=models/fashion-vit-tiny
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
    for which in base cand; do
        bin=$base; [ $which = cand ] && bin=$cand
        for case in "vit-tiny default" "vit-tiny t1" "vit-tiny t2" "vit-tiny w2" \
                    "bundled default" "bundled t1" "bundled t2"; do
            set -- $case
            src="--preset vit-tiny"; iters=200
            [ "$1" = bundled ] && { src="--model $model"; iters=20; }
            opt=""
            case $2 in t1) opt="--threads 1" ;; t2) opt="--threads 2" ;; w2) opt="--workers 2" ;; esac
            # shellcheck disable=SC2086 # word splitting of src/opt is wanted
            j=$(timeout 120 taskset -c 0 "$bin" bench $src --batch 8 $opt --iters $iters \
                --warmup 2 --json) || j='{}'
            echo "$j" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
ips = j["batch"] * j["workers"] / j["median_batch_seconds"] if j else float("nan")
print(sys.argv[1], sys.argv[2], sys.argv[3], "%.1f" % ips, j.get("threads", "-"))
' "$which" "$1" "$2" >> "$out"
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 - "$out" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list); th = {}
for line in open(sys.argv[1]):
    w, m, c, ips, t = line.split()
    d[(w, m, c)].append(float(ips)); th[(w, m, c)] = t
print("%-9s %-8s %12s %12s %8s" % ("model", "case", "baseline", "candidate", "ratio"))
for m, c in sorted({(m, c) for _, m, c in d}):
    b = statistics.median(d[("base", m, c)]); n = statistics.median(d[("cand", m, c)])
    print("%-9s %-8s %8.1f T=%s %8.1f T=%s %8.2f" % (m, c, b, th[("base", m, c)], n,
          th[("cand", m, c)], n / b))
PY
