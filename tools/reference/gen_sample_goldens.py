#!/usr/bin/python3
"""Writes MODEL_DIR/samples/expected.json: PyTorch's answers for the bundled samples.

For each sample PNG the list already names (file, test index, label), the reference ViT
(vit_ref.py, timm semantics) in float64 with MODEL_DIR's weights gives the raw logits and
the softmax top-5, from the PNG read back with PIL through the preprocessing the model's
config.json asks for (RGB, resize the shorter side with PIL bilinear, center crop, /255,
normalize).  test_cli compares `vitfit classify` with these numbers.

    /usr/bin/python3 tools/reference/gen_sample_goldens.py [MODEL_DIR]

Dev-only (Debian python3-torch, python3-torchvision); CI uses the committed file.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_safetensors(path):
    """{name: float64 tensor} of an F32 safetensors file."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {meta['dtype']}, not F32")
        begin, end = meta["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype="<f4").reshape(meta["shape"])
        out[name] = torch.from_numpy(a.astype(np.float64))
    return out


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models",
                                                                    "fashion-vit-tiny")
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    args, pre = config["model_args"], config["pretrained_cfg"]
    cfg = vit_ref.ViTConfig(image_size=args["img_size"], patch_size=args["patch_size"],
                            width=args["embed_dim"], depth=args["depth"],
                            heads=args["num_heads"],
                            mlp_dim=int(args["embed_dim"] * args["mlp_ratio"]),
                            num_classes=config["num_classes"])
    labels = config["label_names"]
    model = vit_ref.ViT(cfg).double().eval()
    model.load_state_dict(read_safetensors(os.path.join(model_dir, "model.safetensors")),
                          strict=True)
    size = pre["input_size"][1]
    preprocess = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(pre["mean"], pre["std"]),
    ])
    expected_path = os.path.join(model_dir, "samples", "expected.json")
    with open(expected_path) as f:
        listed = json.load(f)["samples"]
    samples = []
    for s in listed:
        image = Image.open(os.path.join(model_dir, "samples", s["file"])).convert("RGB")
        x = preprocess(image).unsqueeze(0).double()
        with torch.no_grad():
            logits = model(x)[0]
        p = logits.softmax(0)
        top = torch.argsort(p, descending=True)[:5].tolist()
        samples.append({
            "file": s["file"],
            "test_index": s["test_index"],
            "label": s["label"],
            "top5": {"labels": [labels[j] for j in top], "scores": [float(p[j]) for j in top]},
            "logits": [float(v) for v in logits],
        })
    mean, std = pre["mean"][0], pre["std"][0]
    with open(expected_path, "w") as f:
        json.dump({"model": os.path.relpath(model_dir, ROOT),
                   "computed_by": "tools/reference/gen_sample_goldens.py (vit_ref.ViT, float64, "
                                  "PNG read back with PIL, RGB, Resize(%d bilinear), "
                                  "CenterCrop(%d), ToTensor, Normalize(%g,%g))"
                                  % (size, size, mean, std),
                   "samples": samples}, f, indent=2)
        f.write("\n")
    for s in samples:
        print(f"{s['file']:28} {s['label']:12} -> {s['top5']['labels'][0]:12} "
              f"{s['top5']['scores'][0]:.4f}")


if __name__ == "__main__":
    main()
