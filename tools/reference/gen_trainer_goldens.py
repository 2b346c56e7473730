#!/usr/bin/python3
"""Trainer goldens for tests/unit/test_trainer.c: a few steps of the full recipe (dev-only).

    /usr/bin/python3 tools/reference/gen_trainer_goldens.py

Writes (byte-identical run to run):
  tests/data/trainer/steps-images-idx3-ubyte   N_ITEMS grey 16x16 images (random bytes)
  tests/data/trainer/steps-labels-idx1-ubyte   their labels, classes 0..5 (names "0".."5")
  tests/data/golden/trainer_steps.safetensors  the tensors below

The C test opens the IDX pair, builds the backbone with vit_model_create(CFG) +
vit_model_randomize(BACKBONE_SEED) (vit_ref.random_state_dict gives the same
values), preprocessing img_preprocess_hf(16) (16x16 images: the resize is the
identity, then (x/255 - 0.5)/0.5), and runs trainer_run with the settings in
RECIPE for each method in CASES: no shuffle, no augmentation, batches of 4 over
10 items (4, 4, 2: the last batch is short), 2 epochs = 6 steps.

The recipe is the whole of trainer.c's step, here in torch.optim +
torch.nn.functional, in float64:
  * head: a new one, randinit_fill("head.weight", RECIPE seed, 1/sqrt(F)), bias 0
    (trainer.c make_train_model, TRAINER_HEAD_NEW);
  * loss F.cross_entropy(label_smoothing=LS), mean over the batch;
  * torch.nn.utils.clip_grad_norm_ over every trained parameter, max_norm CLIP,
    asserted here to bind at every step;
  * torch.optim.AdamW(betas 0.9/0.999, eps 1e-8) with two param groups: weight
    decay WD on the decayed ones, 0 on the rest.  Decayed (trainer.c
    decay_masks): bitfit trains every bias + the head and decays head.weight
    only; full trains everything and decays every tensor with ndim >= 2
    except pos_embed and cls_token (so the patch conv weight, qkv/proj/fc1/fc2
    weights and head.weight) -- never biases, LayerNorm gains or embeddings;
  * lr per step from LambdaLR with optim.h's schedule: warm-up
    llround(WARMUP_EPOCHS * 3) = 2 steps of lr*(s+1)/2, then a cosine from lr
    down to MIN_LR exactly at the last step (s = 5).

Stored, per case c in ("bitfit", "full"):
  c.lr (6,), c.loss (6,)          lr used and loss of each step
  c.final.<canonical name>        parameters after the 6 steps: every trained
                                  bias and the head; for full also FROZEN_CHECKED
  inputs (10, 3, 16, 16)          the preprocessed images, as torchvision makes them
__metadata__ records the recipe.

Checks run here (the script stops on failure): the float32 torch run of the
same recipe agrees with the float64 one (reported per tensor: this is the
rounding noise the C test's tolerances must absorb), clipping binds at every
step, and the last step's lr is MIN_LR.
"""
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import randinit  # noqa: E402
import st_write  # noqa: E402
import vit_ref  # noqa: E402
from vit_ref import ViTConfig  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(REPO, "tests", "data", "trainer")
OUT = os.path.join(REPO, "tests", "data", "golden", "trainer_steps.safetensors")

CFG = ViTConfig(image_size=16, patch_size=4, width=32, depth=2, heads=2, mlp_dim=64,
                num_classes=6, proj_dim=0, ln_eps=1e-6, act="gelu", pool="cls", ln_pre=False,
                patch_bias=True)
BACKBONE_SEED = 31
N_ITEMS = 10
LABELS = [3, 0, 5, 1, 2, 4, 0, 5, 1, 3]
DATA_SEED = 77
BATCH = 4
EPOCHS = 2
RECIPE = dict(lr=1e-2, min_lr=1e-4, weight_decay=0.3, warmup_epochs=0.5, label_smoothing=0.1,
              clip_grad_norm=0.2, seed=5)
CASES = ("bitfit", "full")
FROZEN_CHECKED = ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight",
                  "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "blocks.1.norm2.weight",
                  "norm.weight"]


def write_idx():
    """The IDX pair (uncompressed, big-endian header as in Fashion-MNIST)."""
    rng = np.random.default_rng(DATA_SEED)
    images = rng.integers(0, 256, size=(N_ITEMS, 16, 16), dtype=np.uint8)
    os.makedirs(DATA, exist_ok=True)
    with open(os.path.join(DATA, "steps-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, N_ITEMS, 16, 16) + images.tobytes())
    with open(os.path.join(DATA, "steps-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, N_ITEMS) + bytes(LABELS))
    return images


def preprocess(images):
    """torchvision ToTensor + Normalize(0.5, 0.5) on grey replicated to RGB, float32."""
    x = torch.from_numpy(images).float().div(255)          # (N, 16, 16)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # (N, 3, 16, 16)
    return (x - 0.5) / 0.5


def batches_per_epoch():
    return (N_ITEMS + BATCH - 1) // BATCH


def schedule():
    """optim.h's sched_lr for this run: [lr of step s for s in 0..total-1]."""
    per_epoch = batches_per_epoch()
    total = per_epoch * EPOCHS
    w = RECIPE["warmup_epochs"] * per_epoch
    warmup = min(int(math.floor(w + 0.5)), max(total - 1, 0))  # llround, capped (cap_warmup)
    lr, mn = RECIPE["lr"], RECIPE["min_lr"]
    out = []
    for s in range(total):
        if s < warmup:
            out.append(lr * (s + 1) / warmup)
        elif total - 1 - warmup == 0:
            out.append(mn if warmup > 0 else lr)
        else:
            p = (s - warmup) / (total - 1 - warmup)
            out.append(mn + (lr - mn) * 0.5 * (1 + math.cos(math.pi * p)))
    return out, warmup


def decayed(name, shape, method):
    if method == "bitfit":
        return name == "head.weight"
    return len(shape) >= 2 and name not in ("pos_embed", "cls_token")


def trained(name, method):
    if method == "full":
        return True
    return name.endswith(".bias") or name.startswith("head.")


def run(method, inputs, dtype):
    state = vit_ref.random_state_dict(CFG, BACKBONE_SEED)
    F_dim = CFG.feature_dim
    state["head.weight"] = torch.from_numpy(randinit.fill(
        CFG.num_classes * F_dim, "head.weight", RECIPE["seed"], 1.0 / math.sqrt(F_dim),
        0.0).reshape(CFG.num_classes, F_dim))
    state["head.bias"] = torch.zeros(CFG.num_classes)
    model = vit_ref.ViT(CFG)
    model.load_state_dict(state, strict=True)
    model = model.to(dtype).eval()
    params = dict(model.named_parameters())
    shapes = dict(vit_ref.canonical_shapes(CFG))
    train_names = [n for n, _ in vit_ref.canonical_shapes(CFG) if trained(n, method)]
    for n, p in params.items():
        p.requires_grad_(n in train_names)
    dec = [params[n] for n in train_names if decayed(n, shapes[n], method)]
    nodec = [params[n] for n in train_names if not decayed(n, shapes[n], method)]
    lrs, warmup = schedule()
    opt = torch.optim.AdamW([{"params": dec, "weight_decay": RECIPE["weight_decay"]},
                             {"params": nodec, "weight_decay": 0.0}],
                            lr=RECIPE["lr"], betas=(0.9, 0.999), eps=1e-8)
    # (LambdaLR also asks for the step after the last one: min_lr, as sched_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (lrs[s] if s < len(lrs) else RECIPE["min_lr"]) / RECIPE["lr"])
    labels = torch.tensor(LABELS)
    x_all = inputs.to(dtype)
    losses, norms, used_lrs = [], [], []
    for epoch in range(EPOCHS):
        for b0 in range(0, N_ITEMS, BATCH):
            x, y = x_all[b0:b0 + BATCH], labels[b0:b0 + BATCH]
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(x), y, label_smoothing=RECIPE["label_smoothing"])
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_([params[n] for n in train_names],
                                                  RECIPE["clip_grad_norm"])
            used_lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            losses.append(float(loss))
            norms.append(float(norm))
    final = {n: params[n].detach().to(torch.float64).clone() for n in train_names}
    return used_lrs, losses, norms, final, warmup


def main():
    torch.set_num_threads(1)
    images = write_idx()
    inputs = preprocess(images)
    tensors = {"inputs": inputs}
    lrs_want, warmup = schedule()
    assert warmup == 2 and len(lrs_want) == 6, (warmup, len(lrs_want))
    assert lrs_want[-1] == RECIPE["min_lr"], lrs_want
    for method in CASES:
        lrs, losses, norms, final, _ = run(method, inputs, torch.float64)
        lrs32, losses32, _, final32, _ = run(method, inputs, torch.float32)
        assert all(abs(a - b) <= 1e-15 for a, b in zip(lrs, lrs_want)), (lrs, lrs_want)
        assert min(norms) > RECIPE["clip_grad_norm"], f"{method}: clipping does not bind: {norms}"
        print(f"{method}: loss {['%.5f' % v for v in losses]}")
        print(f"{method}: grad norm before clipping {['%.4f' % v for v in norms]}")
        print(f"{method}: lr {['%.3g' % v for v in lrs]}")
        print(f"{method}: float32 vs float64 loss: max |diff| "
              f"{max(abs(a - b) for a, b in zip(losses, losses32)):.2e}")
        keep = [n for n in final if method == "bitfit" or n.endswith(".bias") or
                n.startswith("head.") or n in FROZEN_CHECKED]
        for n in keep:
            d = (final[n] - final32[n]).abs().max().item()
            if d > 1e-6:
                print(f"  {method} {n}: float32 vs float64 max |diff| {d:.2e}")
        tensors[f"{method}.lr"] = torch.tensor(lrs)
        tensors[f"{method}.loss"] = torch.tensor(losses)
        for n in keep:
            tensors[f"{method}.final.{n}"] = final[n]
    meta = {"torch": torch.__version__, "config": CFG.to_json(),
            "backbone_seed": str(BACKBONE_SEED), "batch": str(BATCH), "epochs": str(EPOCHS),
            "labels": repr(LABELS), "recipe": repr(sorted(RECIPE.items())),
            "frozen_checked": ",".join(FROZEN_CHECKED)}
    st_write.save(OUT, tensors, meta)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
