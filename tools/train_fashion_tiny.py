#!/usr/bin/python3
"""Train the bundled default model models/fashion-vit-tiny (dev-only; CI never runs this).

A tiny pre-LN Vision Transformer computed exactly like timm's VisionTransformer
(conv patch embed, class token, learned position embedding, blocks
x = x + proj(attn(norm1(x))); x = x + fc2(GELU_exact(fc1(norm2(x)))), final
LayerNorm, class token, linear head; LayerNorm eps 1e-6), trained from scratch
on Fashion-MNIST with the exact preprocessing the C engine applies for the
written config.json:

    28x28 grey -> PIL .convert("RGB") -> Resize(32, bilinear) -> CenterCrop(32)
    -> ToTensor (/255) -> Normalize(mean 0.5, std 0.5)

Outputs (in --out, default models/fashion-vit-tiny):
    model.safetensors   F32, timm tensor names, __metadata__ with training facts
    config.json         timm hub-style config
    samples/*.png       8 test images (28x28 grey, one per class) + expected.json
                        (top-5 + raw logits of this module in float64)
    README.md

Usage (Debian python3-torch, NOT a pyenv python):
    /usr/bin/python3 tools/train_fashion_tiny.py            # train + export
    /usr/bin/python3 tools/train_fashion_tiny.py --export-only --ckpt /tmp/fvt.pt
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "reference"))
import st_write  # noqa: E402  (tools/reference/st_write.py)

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMG, MEAN, STD = 32, 0.5, 0.5


# ------------------------------------------------------------------ data

def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08, "expected unsigned byte idx file"
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split):
    x = read_idx(f"{DATA}/{split}-images-idx3-ubyte.gz")
    y = read_idx(f"{DATA}/{split}-labels-idx1-ubyte.gz")
    return x, y.astype(np.int64)


# The C engine's preprocessing for config.json (crop_pct 1.0 -> resize 32).
EVAL_TF = transforms.Compose([
    transforms.Resize(IMG, interpolation=transforms.InterpolationMode.BILINEAR),
    transforms.CenterCrop(IMG),
    transforms.ToTensor(),
    transforms.Normalize([MEAN] * 3, [STD] * 3),
])
# Same geometry without ToTensor/Normalize, to cache uint8 pixels.
RESIZE_TF = transforms.Compose([
    transforms.Resize(IMG, interpolation=transforms.InterpolationMode.BILINEAR),
    transforms.CenterCrop(IMG),
])


def preprocess_u8(images):
    """(n,28,28) uint8 -> (n,3,32,32) uint8, exactly the PIL pipeline (before /255)."""
    out = np.empty((len(images), 3, IMG, IMG), dtype=np.uint8)
    for i, a in enumerate(images):
        im = RESIZE_TF(Image.fromarray(a, mode="L").convert("RGB"))
        out[i] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    return out


def to_input(u8):
    """uint8 (B,3,32,32) -> normalized float32, == ToTensor + Normalize."""
    return (torch.from_numpy(u8).float() / 255.0 - MEAN) / STD


# ------------------------------------------------------------------ model (timm semantics and names)

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        hs = C // self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, hs).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * hs ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    def __init__(self, img=32, patch=4, dim=96, depth=4, heads=3, mlp_ratio=4.0, classes=10):
        super().__init__()
        n = (img // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n, dim))
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        # timm-style init: trunc_normal(.02) on pos/linears, tiny cls token, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, img):
        x = self.patch_embed(img)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


# ------------------------------------------------------------------ train / eval

@torch.no_grad()
def evaluate(model, xu8, y, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        pred = model(to_input(xu8[i:i + batch])).argmax(1).numpy()
        correct += int((pred == y[i:i + batch]).sum())
    return correct / len(y)


def train(args, model, xtr, ytr):
    g = torch.Generator().manual_seed(args.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), foreach=True)
    steps_per_epoch = len(ytr) // args.batch  # drop last partial batch
    total = steps_per_epoch * args.epochs
    warm = min(args.warmup, total // 10)

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        return args.lr * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))

    ytr_t = torch.from_numpy(ytr)
    step, t0, last_epoch_loss = 0, time.time(), float("nan")
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g).numpy()
        run, nb = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            x = to_input(xtr[idx])
            if args.flip:
                m = torch.rand(len(idx), generator=g) < 0.5
                x[m] = x[m].flip(-1)
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x), ytr_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run += loss.item()
            nb += 1
            if args.budget_min and time.time() - t0 > 60 * args.budget_min:
                print(f"time budget hit at step {step}/{total}; stopping", flush=True)
                return run / nb, time.time() - t0, step
            if step % 50 == 0:
                print(f"ep {ep + 1}/{args.epochs} step {step}/{total} loss {run / nb:.4f} "
                      f"lr {lr_at(step):.2e} {time.time() - t0:.0f}s", flush=True)
        last_epoch_loss = run / nb
        print(f"== epoch {ep + 1} mean train loss {last_epoch_loss:.4f} ({time.time() - t0:.0f}s)",
              flush=True)
    return last_epoch_loss, time.time() - t0, step


# ------------------------------------------------------------------ export

def slug(label):
    return "".join(c if c.isalnum() else "_" for c in label.lower())


def state_in_forward_order(model):
    sd = model.state_dict()
    order = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        order += [b + s for s in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                  "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                  "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
    order += ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert sorted(order) == sorted(sd.keys()), (sorted(order), sorted(sd.keys()))
    return {k: sd[k].float() for k in order}


def export(args, model, info, xte_raw, yte):
    out = args.out
    os.makedirs(os.path.join(out, "samples"), exist_ok=True)
    meta = {
        "format": "pt",
        "architecture": "vit_fashion_tiny",
        "dataset": "Fashion-MNIST (Debian /usr/share/datasets/fashion-mnist)",
        "preprocess": "RGB, resize 32 bilinear, center crop 32, /255, (x-0.5)/0.5",
        "seed": str(info["seed"]),
        "epochs": str(info["epochs"]),
        "batch_size": str(info["batch"]),
        "lr": str(info["lr"]),
        "weight_decay": str(info["wd"]),
        "steps": str(info["steps"]),
        "train_loss": f"{info['train_loss']:.4f}",
        "test_top1": f"{info['test_acc']:.4f}",
        "train_seconds": f"{info['train_seconds']:.0f}",
        "trainer": "tools/train_fashion_tiny.py",
    }
    st_write.save(os.path.join(out, "model.safetensors"), state_in_forward_order(model), meta)
    # round-trip check
    back, bmeta = st_write.load(os.path.join(out, "model.safetensors"))
    for k, v in model.state_dict().items():
        assert np.array_equal(back[k], v.numpy()), k
    assert bmeta == meta

    C = args.width
    cfg = {
        "architecture": "vit_fashion_tiny",
        "num_classes": 10,
        "num_features": C,
        "global_pool": "token",
        "model_args": {"img_size": IMG, "patch_size": args.patch, "embed_dim": C,
                       "depth": args.depth, "num_heads": args.heads, "mlp_ratio": 4.0},
        "label_names": LABELS,
        "pretrained_cfg": {"input_size": [3, IMG, IMG], "interpolation": "bilinear",
                           "crop_pct": 1.0, "mean": [MEAN] * 3, "std": [STD] * 3,
                           "num_classes": 10},
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    # samples: first test image of each class, in test-set order, 8 classes
    picked, seen = [], set()
    for i, lab in enumerate(yte):
        if int(lab) not in seen:
            seen.add(int(lab))
            picked.append(i)
        if len(picked) == 8:
            break
    m64 = ViT(IMG, args.patch, C, args.depth, args.heads, 4.0, 10)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double().eval()
    samples = []
    for i in picked:
        lab = LABELS[int(yte[i])]
        name = f"{i}_{slug(lab)}.png"
        path = os.path.join(out, "samples", name)
        Image.fromarray(xte_raw[i], mode="L").save(path, optimize=False)
        im = Image.open(path)
        assert im.mode == "L" and np.array_equal(np.asarray(im), xte_raw[i])
        x = EVAL_TF(im.convert("RGB")).unsqueeze(0).double()
        with torch.no_grad():
            logits = m64(x)[0]
        p = logits.softmax(0)
        top = torch.argsort(p, descending=True)[:5].tolist()
        samples.append({
            "file": name,
            "test_index": i,
            "label": lab,
            "top5": {"labels": [LABELS[j] for j in top], "scores": [float(p[j]) for j in top]},
            "logits": [float(v) for v in logits],
        })
    with open(os.path.join(out, "samples", "expected.json"), "w") as f:
        json.dump({"model": "models/fashion-vit-tiny",
                   "computed_by": "tools/train_fashion_tiny.py (PyTorch module, float64, "
                                  "PNG read back with PIL, RGB, Resize(32 bilinear), "
                                  "CenterCrop(32), ToTensor, Normalize(0.5,0.5))",
                   "samples": samples}, f, indent=2)
        f.write("\n")
    return samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "fashion-vit-tiny"))
    ap.add_argument("--ckpt", default="/tmp/fashion_vit_tiny_state.pt",
                    help="torch state (weights + training facts) saved after training")
    ap.add_argument("--export-only", action="store_true", help="skip training, load --ckpt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--flip", action="store_true", help="random horizontal flip")
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--budget-min", type=float, default=0,
                    help="stop training after this many minutes (0: no limit)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a loaded 2-core box)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    xte_raw, yte = load_split("t10k")
    t = time.time()
    xte = preprocess_u8(xte_raw)
    model = ViT(IMG, args.patch, args.width, args.depth, args.heads, 4.0, 10)
    if args.export_only:
        ck = torch.load(args.ckpt)
        model.load_state_dict(ck["state"])
        info = ck["info"]
    else:
        xtr_raw, ytr = load_split("train")
        xtr = preprocess_u8(xtr_raw)
        print(f"preprocessed {len(ytr)}+{len(yte)} images in {time.time() - t:.1f}s; "
              f"params {sum(p.numel() for p in model.parameters())}", flush=True)
        train_loss, secs, steps = train(args, model, xtr, ytr)
        info = {"seed": args.seed, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
                "wd": args.wd, "train_loss": train_loss, "train_seconds": secs, "steps": steps}
        info["test_acc"] = evaluate(model, xte, yte)
        torch.save({"state": model.state_dict(), "info": info, "args": vars(args)}, args.ckpt)
    model.eval()
    print(f"test top-1 {info['test_acc']:.4f}", flush=True)
    samples = export(args, model, info, xte_raw, yte)
    for s in samples:
        print(f"{s['file']:24s} label {s['label']:12s} -> {s['top5']['labels'][0]} "
              f"({s['top5']['scores'][0]:.4f})")


if __name__ == "__main__":
    main()
