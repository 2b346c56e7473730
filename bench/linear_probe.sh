#!/usr/bin/env bash
# Issue 10, item 3: linear-probe epochs with the features computed once
# (--feature-cache-mb, default 1024) against recomputing them every epoch
# (--feature-cache-mb 0: the path every run took before), on the bundled
# model and the first ITEMS Fashion-MNIST training images (10% held out for
# validation, validated every epoch).  Both settings run ROUNDS times,
# interleaved; an epoch's time is the gap between two epoch-end lines of
# `vitfit train` (training + validation), the first epoch's from the start
# (model load and, cached, the pass that computes the features).  Prints the
# median first epoch and the median of the later ones per setting, their
# ratio, and whether both settings ended with the same task and scores.
#   bench/linear_probe.sh [BUILD_DIR]
#   ITEMS=10000 EPOCHS=4 ROUNDS=2 THREADS=2 bench/linear_probe.sh build   # the defaults
# ~6.5 min with the defaults on 2 cores shared at load average ~7 (the recomputed epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
items=${ITEMS:-10000}
epochs=${EPOCHS:-4}
rounds=${ROUNDS:-2}
threads=${THREADS:-2}
ninja -C "$build" server/vitfit >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "linear probe, models/fashion-vit-tiny, $items Fashion-MNIST images, $epochs epochs," \
     "$rounds rounds, $threads threads; load average $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 - "$build/server/vitfit" "$out" "$items" "$epochs" "$rounds" "$threads" <<'EOF'
import json, statistics, subprocess, sys, time

vitfit, out, items, epochs, rounds, threads = sys.argv[1:7]
data = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
names = "tshirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,boot"

def run(tag, cache_mb, k):
    """One `vitfit train`: epoch times (s) and its summary."""
    cmd = [vitfit, "train", "--model", "models/fashion-vit-tiny", "--method", "linear",
           "--train", data, "--class-names", names, "--limit-train", items,
           "--epochs", epochs, "--early-stopping-patience", "0", "--threads", threads,
           "--log-every", "1000000", "--json", "--feature-cache-mb", str(cache_mb),
           "--out", f"{out}/{tag}{k}.safetensors"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks, notes = [], []
    for line in p.stderr:
        if line.startswith('{"epoch_end"'):
            marks.append(time.monotonic())
        elif line.startswith("vitfit: linear probe"):
            notes.append(line.strip())
    summary = json.loads(p.stdout.read())
    if p.wait() != 0:
        sys.exit(f"{tag}: vitfit train failed")
    times = [m - s for m, s in zip(marks, [t0] + marks[:-1])]
    return times, summary, notes

res = {"recompute": [], "cached": []}
for k in range(int(rounds)):
    for tag, mb in (("recompute", 0), ("cached", 1024)):
        times, summary, notes = run(tag, mb, k)
        res[tag].append((times, summary))
        print(f"  {tag:9s} round {k + 1}: epochs " + " ".join(f"{t:.3f}" for t in times) + " s"
              + (f"   ({len(notes)} cache notes)" if notes else ""), file=sys.stderr)

def med(tag, first):
    xs = [t for times, _ in res[tag] for t in (times[:1] if first else times[1:])]
    return statistics.median(xs)

def key(s):
    e = s["eval"]
    return (s["final_train_loss"], s["best_epoch"], e["top1"], e["loss"], json.dumps(e["confusion"]))

same = all(key(a[1]) == key(b[1]) for a, b in zip(res["recompute"], res["cached"]))
tensors = open(f"{out}/recompute0.safetensors", "rb").read()
cached = open(f"{out}/cached0.safetensors", "rb").read()
def body(b):  # the tensors, not the header (its "created" time differs)
    n = int.from_bytes(b[:8], "little")
    return b[8 + n:]
same = same and body(tensors) == body(cached)
r1, c1 = med("recompute", True), med("cached", True)
r2, c2 = med("recompute", False), med("cached", False)
print(f"{'setting':10s} {'epoch 1 (s)':>12s} {'later epochs (s)':>17s}")
print(f"{'recompute':10s} {r1:12.3f} {r2:17.4f}")
print(f"{'cached':10s} {c1:12.3f} {c2:17.4f}")
print(f"later epochs: x{r2 / c2:.1f} faster; epoch 1: x{r1 / c1:.2f};"
      f" same task and scores: {'yes' if same else 'NO'}")
EOF
