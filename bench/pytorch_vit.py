#!/usr/bin/python3
"""PyTorch baseline for `vitfit bench`: torchvision vit_b_16, fp32, inference mode.

Prints one JSON line per batch size with the median batch time, like
`vitfit bench --json`.  Dev-only; uses Debian's python3-torch/torchvision.
usage: bench/pytorch_vit.py [--threads 2] [--iters 5] BATCH...
"""
import argparse
import json
import statistics
import time

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("batches", type=int, nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224)
        times = []
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(args.iters):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "batch": batch,
                          "threads": args.threads, "median_batch_seconds": median,
                          "images_per_second": batch / median}), flush=True)


if __name__ == "__main__":
    main()
