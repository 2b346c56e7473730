#!/usr/bin/python3
"""Export torchvision vit_b_16 (random weights, fp32) to ONNX for bench.mjs.

Dev-only; uses Debian's python3-torch 1.13 / torchvision 0.14.  The batch axis is
dynamic so one file serves every batch size.  Gradients stay enabled: torch 1.13's
exporter works with them (and traces badly under inference_mode).
usage: bench/onnx/export_vit.py OUT.onnx [--opset 17]
"""
import argparse
import os
import warnings

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    x = torch.randn(1, 3, 224, 224)
    base, ext = os.path.splitext(args.out)
    tmp = base + ".partial" + ext  # still matches the *.onnx ignore rule
    # The image-size asserts in torchvision's ViT trace to constants: fine, 224 is fixed.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    torch.onnx.export(model, x, tmp, opset_version=args.opset, do_constant_folding=True,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, args.out)  # never leave a half-written model behind
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.0f} MB, opset {args.opset})")


if __name__ == "__main__":
    main()
