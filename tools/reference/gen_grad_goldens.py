#!/usr/bin/python3
"""Writes the gradient goldens tests/data/golden/grad_*.safetensors (dev-only).

    /usr/bin/python3 tools/reference/gen_grad_goldens.py [--out DIR] [--skip-b16] [--no-checks]

For each case the model is vit_ref.ViT with every canonical parameter drawn by
randinit (canonical name, the case's seed, randinit.kind_for's rule) -- exactly
what `vit_model_create(cfg)` + `vit_model_randomize(m, seed)` give in C -- and
the input is `randinit_fill(x, B*3*H*W, "input", seed, 1.0, 0.0)`.  Labels are
explicit.  Loss = F.cross_entropy(logits, labels, reduction="mean",
label_smoothing=ls).  Everything is computed in float64 and stored as float32.

Stored tensors: "loss" (1,), "logits" (B, K), "grad.<canonical name>" (shape of
the parameter) and, for the tiny full cases, "dinput" (B, 3, H, W).

Before writing, the script cross-checks (and stops on failure):
  * vit_ref's forward against the committed forward goldens (tiny_timm,
    tiny_timm_meanpool, tiny_clip; vit_b16's first 10 logits for case e);
  * autograd against central finite differences in float64 on sampled
    elements of every parameter tensor (tiny cases) / a few biases (ViT-B/16);
  * torch.autograd.gradcheck of the whole model + loss (every parameter and
    the input) on micro configs covering each variant;
  * the gradients of case (a) against the real torchvision VisionTransformer,
    and of case (c) against the OpenAI-CLIP-structured model (upstream_like),
    loaded from the exported checkpoint (gradients mapped back by name).
Output is byte-deterministic (1 thread, fixed order).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402
import upstream_like  # noqa: E402
import vit_ref  # noqa: E402
from vit_ref import ViTConfig  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join(REPO, "tests", "data", "golden")

TINY_VITB = ViTConfig(image_size=32, patch_size=8, width=64, depth=2, heads=4, mlp_dim=256,
                      num_classes=10, proj_dim=0, ln_eps=1e-6, act="gelu", pool="cls",
                      ln_pre=False, patch_bias=True)
TINY_CLIP = ViTConfig(image_size=42, patch_size=14, width=64, depth=2, heads=2, mlp_dim=256,
                      num_classes=10, proj_dim=32, ln_eps=1e-5, act="quick_gelu", pool="cls",
                      ln_pre=True, patch_bias=False)
TINY_MEAN = ViTConfig(**{**TINY_VITB.__dict__, "pool": "mean"})
VIT_B16_10 = ViTConfig(image_size=224, patch_size=16, width=768, depth=12, heads=12,
                       mlp_dim=3072, num_classes=10, proj_dim=0, ln_eps=1e-6, act="gelu",
                       pool="cls", ln_pre=False, patch_bias=True)

# name -> (file, cfg, seed, labels, label_smoothing, grads "all" | "bitfit", dinput)
CASES = {
    "grad_tiny_vitb": ("grad_tiny_vitb.safetensors", TINY_VITB, 201, [1, 7, 3], 0.0, "all", True),
    "grad_tiny_vitb_ls": ("grad_tiny_vitb_ls.safetensors", TINY_VITB, 201, [0, 9, 5], 0.1,
                          "bitfit", False),
    "grad_tiny_clip": ("grad_tiny_clip.safetensors", TINY_CLIP, 202, [4, 2], 0.0, "all", True),
    "grad_tiny_meanpool": ("grad_tiny_meanpool.safetensors", TINY_MEAN, 203, [3, 3], 0.0, "all",
                           True),
    "grad_vitb16": ("grad_vitb16.safetensors", VIT_B16_10, 2026, [3, 8], 0.0, "bitfit", False),
}

REPORT = []  # (case, check, value) printed at the end


def log(*a):
    print(*a, flush=True)


def report(case, what, value, tol):
    REPORT.append((case, what, value))
    if not value <= tol:
        raise SystemExit(f"{case}: {what}: {value:.3g} > {tol:g}")
    log(f"  {case}: {what}: {value:.3g} (tol {tol:g})")


def is_bitfit(name):
    """The BitFit trainable set: every *bias (backbone and head) plus head.weight."""
    return name.endswith("bias") or name == "head.weight"


def build64(cfg, seed, trainable=None):
    """float64 reference model; requires_grad only on `trainable` names (None: all)."""
    m = vit_ref.build(cfg, seed).double()
    for n, p in m.named_parameters():
        p.requires_grad_(trainable is None or trainable(n))
    return m


def loss_fn(logits, labels, ls):
    return F.cross_entropy(logits, labels, reduction="mean", label_smoothing=ls)


def forward_backward(model, x, labels, ls, want_dinput):
    x = x.detach().clone().requires_grad_(want_dinput)
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = loss_fn(logits, labels, ls)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return loss.detach(), logits.detach(), grads, (x.grad.detach() if want_dinput else None)


# ---------------------------------------------------------------- cross-checks

def check_forward_goldens():
    """vit_ref in float64 reproduces the committed forward goldens."""
    log("forward goldens vs vit_ref:")
    tiny = ViTConfig(**{**TINY_VITB.__dict__})
    fwd_clip = ViTConfig(image_size=42, patch_size=14, width=128, depth=2, heads=2, mlp_dim=512,
                         num_classes=0, proj_dim=32, ln_eps=1e-5, act="quick_gelu", pool="cls",
                         ln_pre=True, patch_bias=False)
    for rel, cfg, seed in [("tiny_timm/expected.safetensors", tiny, 101),
                           ("tiny_timm_meanpool/expected.safetensors", TINY_MEAN, 102),
                           ("tiny_clip.expected.safetensors", fwd_clip, 105)]:
        t, meta = st_write.load(os.path.join(GOLDEN, rel))
        assert json.loads(meta["config"]) == json.loads(cfg.to_json()), rel
        assert int(meta["seed"]) == seed, rel
        x = vit_ref.random_input(int(meta["batch"]), cfg, seed)
        assert np.array_equal(x.numpy(), t["input"]), rel + ": input differs"
        with torch.no_grad():
            y = build64(cfg, seed)(x.double())
        d = (y - torch.from_numpy(t["output"].astype(np.float64))).abs().max().item()
        report(rel, "vit_ref f64 vs committed output (max abs)", d, 1e-6)


def flat_grad_cmp(a, b):
    """max |a-b| / max(max|b|, tiny) over one tensor pair."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def check_finite_differences(case, model, x, labels, ls, grads, per_tensor=3, h=1e-4,
                             names=None):
    """Five-point central differences in float64 on sampled elements of each parameter."""
    rng = np.random.default_rng(12345)
    params = dict(model.named_parameters())
    worst_rel, worst_abs, count = 0.0, 0.0, 0
    with torch.no_grad():
        for name in (names if names is not None else grads):
            p, g = params[name], grads[name]
            flat_p, flat_g = p.view(-1), g.reshape(-1)
            idx = {int(flat_g.abs().argmax())}
            for i in rng.choice(flat_p.numel(), size=min(per_tensor, flat_p.numel()),
                                replace=False):
                idx.add(int(i))
            for i in sorted(idx):
                old = flat_p[i].item()
                f = {}
                for k in (-2, -1, 1, 2):
                    flat_p[i] = old + k * h
                    f[k] = loss_fn(model(x), labels, ls).item()
                flat_p[i] = old
                fd = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * h)  # O(h^4) stencil
                ad = flat_g[i].item()
                err = abs(fd - ad)
                worst_abs = max(worst_abs, err)
                # relative to the element, floored at 1e-3 of the tensor's largest gradient
                denom = max(abs(ad), 1e-3 * flat_g.abs().max().item(), 1e-12)
                worst_rel = max(worst_rel, err / denom)
                count += 1
    log(f"  {case}: finite differences on {count} elements")
    report(case, "finite diff vs autograd: max abs diff", worst_abs, 1e-7)
    report(case, "finite diff vs autograd: max rel diff", worst_rel, 1e-5)


def check_gradcheck():
    """torch.autograd.gradcheck of loss(params, input) on micro configs of every variant."""
    from torch.nn.utils import stateless
    base = dict(image_size=8, patch_size=4, width=8, depth=1, heads=2, mlp_dim=16,
                num_classes=3, proj_dim=0, ln_eps=1e-6, act="gelu", pool="cls",
                ln_pre=False, patch_bias=True)
    variants = [
        ("micro vitb cls", ViTConfig(**base), 0.0),
        ("micro vitb cls ls=0.1", ViTConfig(**base), 0.1),
        ("micro meanpool", ViTConfig(**{**base, "pool": "mean"}), 0.0),
        ("micro clip", ViTConfig(**{**base, "act": "quick_gelu", "ln_pre": True,
                                     "patch_bias": False, "proj_dim": 4, "ln_eps": 1e-5}), 0.0),
    ]
    log("gradcheck (float64, every parameter + input) on micro configs:")
    for what, cfg, ls in variants:
        model = build64(cfg, 7)
        names = [n for n, _ in model.named_parameters()]
        x = vit_ref.random_input(2, cfg, 7).double()
        labels = torch.tensor([2, 0])

        def f(xx, *ps):
            out = stateless.functional_call(model, dict(zip(names, ps)), (xx,))
            return loss_fn(out, labels, ls)

        inputs = [x.clone().requires_grad_(True)] + \
                 [p.detach().clone().requires_grad_(True) for p in model.parameters()]
        ok = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
        n = sum(t.numel() for t in inputs)
        log(f"  {what}: gradcheck over {n} elements: {'ok' if ok else 'FAILED'}")
        if not ok:
            raise SystemExit(f"gradcheck failed: {what}")
        REPORT.append((what, "gradcheck (atol 1e-8, rtol 1e-6)", 0.0))


def check_torchvision(case, cfg, seed, x, labels, ls, loss, grads):
    """Same loss and gradients from the real torchvision VisionTransformer."""
    from torchvision.models.vision_transformer import VisionTransformer
    state = vit_ref.random_state_dict(cfg, seed)
    ckpt = vit_ref.export(state, cfg, "torchvision")
    tv = VisionTransformer(image_size=cfg.image_size, patch_size=cfg.patch_size,
                           num_layers=cfg.depth, num_heads=cfg.heads, hidden_dim=cfg.width,
                           mlp_dim=cfg.mlp_dim, num_classes=cfg.num_classes)
    tv.load_state_dict(ckpt, strict=True)
    tv = tv.double().eval()
    tv_loss, _, tv_grads, _ = forward_backward(tv, x, labels, ls, False)
    report(case, "torchvision loss (abs diff)", abs(tv_loss.item() - loss.item()), 1e-12)
    # map torchvision grads back to canonical names through the export table
    canon_order = [n for n, _ in vit_ref.canonical_shapes(cfg)]
    tv_order = list(ckpt.keys())  # export() emits in canonical order, one target per name
    assert len(tv_order) == len(canon_order)
    worst = 0.0
    for cn, tn in zip(canon_order, tv_order):
        worst = max(worst, flat_grad_cmp(tv_grads[tn].reshape(grads[cn].shape), grads[cn]))
    report(case, "torchvision grads vs vit_ref (max err / max|grad| per tensor)", worst, 1e-10)


def check_clip_structured(case, cfg, seed, x, labels, ls, loss, grads):
    """Same loss and gradients from the OpenAI-CLIP-structured model + a linear head."""
    state = vit_ref.random_state_dict(cfg, seed)
    body_cfg = ViTConfig(**{**cfg.__dict__, "num_classes": 0})
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    ckpt = vit_ref.export(body, body_cfg, "clip")

    class ClipWithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = upstream_like.ClipVisual(
                input_resolution=cfg.image_size, patch_size=cfg.patch_size, width=cfg.width,
                layers=cfg.depth, heads=cfg.heads, output_dim=cfg.proj_dim, eps=cfg.ln_eps)
            self.head = nn.Linear(cfg.proj_dim, cfg.num_classes)

        def forward(self, img):
            return self.head(self.clip(img))

    m = ClipWithHead()
    m.clip.load_state_dict(ckpt, strict=True)
    m.head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    m = m.double().eval()
    c_loss, _, c_grads, _ = forward_backward(m, x, labels, ls, False)
    report(case, "CLIP-structured loss (abs diff)", abs(c_loss.item() - loss.item()), 1e-12)
    canon_body = [n for n, _ in vit_ref.canonical_shapes(body_cfg)]
    # export() emits one target per canonical tensor, in canonical order; ops are
    # vec / drop0 (reshape) and t (transpose) -> undo them by name.
    worst = 0.0
    for cn, tn in zip(canon_body, list(ckpt.keys())):
        g = c_grads["clip." + tn]
        if cn == "proj.weight":
            g = g.t()
        worst = max(worst, flat_grad_cmp(g.reshape(grads[cn].shape), grads[cn]))
    for cn in ("head.weight", "head.bias"):
        worst = max(worst, flat_grad_cmp(c_grads[cn], grads[cn]))
    report(case, "CLIP-structured grads vs vit_ref (max err / max|grad| per tensor)", worst,
           1e-10)


# ---------------------------------------------------------------- cases

def meta_for(case, cfg, seed, labels, ls, batch, grads, stored, extra=None):
    m = {
        "case": case,
        "config": cfg.to_json(),
        "seed": str(seed),
        "labels": json.dumps(labels),
        "label_smoothing": repr(float(ls)),
        "batch": str(batch),
        "grads": grads,
        "tensors": json.dumps(stored, separators=(",", ":")),
        "loss": "torch.nn.functional.cross_entropy(logits, labels, reduction='mean', "
                "label_smoothing=label_smoothing)",
        "input": f'randinit fill name="input" scale=1 offset=0 seed={seed}, shape (B,3,H,W)',
        "weights": f"randinit_tensor(canonical name, seed={seed}) for every parameter",
        "compute": "float64 (torch), stored float32",
        "generator": "tools/reference/gen_grad_goldens.py",
    }
    if extra:
        m.update(extra)
    return m


def run_case(out, case, checks):
    fname, cfg, seed, labels, ls, which, want_dinput = CASES[case]
    B = len(labels)
    t0 = time.time()
    log(f"{case}: seed {seed}, B={B}, labels {labels}, label_smoothing {ls}, grads {which}")
    trainable = is_bitfit if which == "bitfit" else None
    model = build64(cfg, seed, trainable)
    x = vit_ref.random_input(B, cfg, seed).double()
    y = torch.tensor(labels, dtype=torch.long)
    loss, logits, grads, dx = forward_backward(model, x, y, ls, want_dinput)
    order = [n for n, _ in vit_ref.canonical_shapes(cfg)]
    keep = [n for n in order if which == "all" or is_bitfit(n)]
    assert set(grads) == set(keep), (set(grads) ^ set(keep))
    log(f"  loss {loss.item():.9f}  ({time.time() - t0:.1f} s)")

    extra = {}
    if checks:
        if case == "grad_tiny_vitb":
            check_torchvision(case, cfg, seed, x, y, ls, loss, grads)
        if case == "grad_tiny_clip":
            check_clip_structured(case, cfg, seed, x, y, ls, loss, grads)
        if case == "grad_tiny_vitb_ls":
            # label smoothing by hand: q = (1-ls) onehot + ls/K; loss = -sum q log p / B
            K = cfg.num_classes
            q = torch.full((B, K), ls / K, dtype=torch.float64)
            q[torch.arange(B), y] += 1.0 - ls
            by_hand = -(q * logits.log_softmax(-1)).sum(-1).mean().item()
            report(case, "label smoothing by hand vs F.cross_entropy", abs(by_hand - loss.item()),
                   1e-14)
        if cfg.width <= 64:
            check_finite_differences(case, model, x, y, ls, grads)
        else:
            names = ["head.bias", "head.weight", "patch_embed.proj.bias",
                     "blocks.0.attn.qkv.bias", "blocks.11.mlp.fc2.bias", "norm.bias"]
            check_finite_differences(case, model, x, y, ls, grads, per_tensor=0, names=names)
        if case == "grad_vitb16":
            # backbone + the first 10 head rows are the vit_b16 forward golden's weights
            t, meta = st_write.load(os.path.join(GOLDEN, "vit_b16.expected.safetensors"))
            assert int(meta["seed"]) == seed
            d = (logits - torch.from_numpy(t["output"][:, :10].astype(np.float64))).abs().max()
            report(case, "logits vs vit_b16.expected output[:, :10] (max abs)", d.item(), 1e-5)
            extra["note"] = ("weights and input are not stored: regenerate them with randinit "
                             "(canonical names, this seed); only the BitFit set's grads are stored")

    tensors = {"loss": loss.reshape(1).float(), "logits": logits.float()}
    if dx is not None:
        tensors["dinput"] = dx.float()
    for n in keep:
        tensors["grad." + n] = grads[n].float()
    stored = list(tensors.keys())
    st_write.save(os.path.join(out, fname), tensors,
                  meta_for(case, cfg, seed, labels, ls, B, which, stored, extra))
    log(f"  wrote {fname} ({os.path.getsize(os.path.join(out, fname))} bytes, "
        f"{time.time() - t0:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=GOLDEN)
    ap.add_argument("--skip-b16", action="store_true", help="skip the full ViT-B/16 case")
    ap.add_argument("--no-checks", action="store_true", help="skip the cross-checks")
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order: byte-identical reruns
    torch.manual_seed(0)      # nothing random is used, but module init draws numbers
    os.makedirs(args.out, exist_ok=True)
    checks = not args.no_checks
    if checks:
        check_forward_goldens()
        check_gradcheck()
    for case in CASES:
        if case == "grad_vitb16" and args.skip_b16:
            continue
        run_case(args.out, case, checks)
    if REPORT:
        log("summary:")
        for case, what, v in REPORT:
            log(f"  {case:42s} {what:66s} {v:.3g}")


if __name__ == "__main__":
    main()
