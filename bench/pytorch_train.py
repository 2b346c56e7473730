#!/usr/bin/python3
"""PyTorch baseline for `vitfit bench --train`: torchvision vit_b_16 with a
10-class head, one training step = forward, cross-entropy, backward, AdamW.

methods: bitfit (requires_grad on every bias + the head), linear (head only),
full (everything).  Prints one JSON line like `vitfit bench --train --json`,
including this process's peak RSS, so run one method per process.
usage: bench/pytorch_train.py --method bitfit [--batch 32] [--threads 2] [--iters 3]
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["bitfit", "linear", "full"], default="bitfit")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(num_classes=10).train()
    for name, p in model.named_parameters():
        if args.method == "full":
            p.requires_grad_(True)
        elif args.method == "linear":
            p.requires_grad_(name.startswith("heads."))
        else:
            p.requires_grad_(name.endswith("bias") or name.startswith("heads."))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 3, 224, 224)
    y = torch.arange(args.batch) % 10
    times = []
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({"impl": "pytorch", "method": args.method, "batch": args.batch,
                      "threads": args.threads, "median_step_seconds": median,
                      "images_per_second": args.batch / median,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}),
          flush=True)


if __name__ == "__main__":
    main()
