#!/usr/bin/python3
"""Writes the committed golden fixtures under tests/data/golden/ (dev-only).

    /usr/bin/python3 tools/reference/gen_vit_goldens.py [--out DIR]

Every model's weights come from randinit (canonical names, a fixed seed per
case), are exported to one checkpoint layout, and the expected output is
computed in float64 and stored as float32.  Before anything is written, the
exported checkpoints are loaded (strict=True) into torchvision's real
VisionTransformer or into upstream-structured models (upstream_like.py) and
their outputs compared with the reference ViT.  Output is byte-deterministic.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402
import upstream_like  # noqa: E402
import vit_ref  # noqa: E402
from vit_ref import ViTConfig  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BATCH = 3
LABELS = ["airplane", "automobile", "bird", "cat", "deer",
          "dog", "frog", "horse", "ship", "truck"]

TINY_TIMM = ViTConfig(image_size=32, patch_size=8, width=64, depth=2, heads=4, mlp_dim=256,
                      num_classes=10, ln_eps=1e-6, act="gelu", pool="cls", patch_bias=True)
TINY_TIMM_MEAN = ViTConfig(**{**TINY_TIMM.__dict__, "pool": "mean"})
TINY_HF = ViTConfig(**{**TINY_TIMM.__dict__, "ln_eps": 1e-12})
TINY_TV = ViTConfig(image_size=32, patch_size=8, width=128, depth=2, heads=2, mlp_dim=512,
                    num_classes=10, ln_eps=1e-6, act="gelu", pool="cls", patch_bias=True)
TINY_CLIP = ViTConfig(image_size=42, patch_size=14, width=128, depth=2, heads=2, mlp_dim=512,
                      num_classes=0, proj_dim=32, ln_eps=1e-5, act="quick_gelu", pool="cls",
                      ln_pre=True, patch_bias=False)
# Layout variants: small (8px, patch 4, one block) so that three more models
# stay ~100 KB each; width 64 makes the heads = width / 64 rule give 1 head
# for the files without a config.  CLIP's MLP is always 4 x width.
TINY_TV_LINEAR = ViTConfig(image_size=8, patch_size=4, width=64, depth=1, heads=1, mlp_dim=96,
                           num_classes=5, ln_eps=1e-6, act="gelu", pool="cls", patch_bias=True)
TINY_HF_BARE = ViTConfig(image_size=8, patch_size=4, width=64, depth=1, heads=4, mlp_dim=96,
                         num_classes=0, ln_eps=1e-12, act="gelu", pool="cls", patch_bias=True)
TINY_CLIP_BARE = ViTConfig(image_size=8, patch_size=4, width=64, depth=1, heads=1, mlp_dim=256,
                           num_classes=0, proj_dim=16, ln_eps=1e-5, act="quick_gelu",
                           pool="cls", ln_pre=True, patch_bias=False)
VIT_B16 = ViTConfig(image_size=224, patch_size=16, width=768, depth=12, heads=12, mlp_dim=3072,
                    num_classes=1000, ln_eps=1e-6, act="gelu", pool="cls", patch_bias=True)

SEEDS = {"tiny_timm": 101, "tiny_timm_meanpool": 102, "tiny_hf": 103, "tiny_tv": 104,
         "tiny_clip": 105, "tiny_tv_linear": 106, "tiny_hf_bare": 107, "tiny_clip_bare": 108,
         "vit_b16": 2026}

MAX_DIFF = {}  # case -> {check: max abs diff}, printed at the end


def log(*a):
    print(*a, flush=True)


def f64_output(model, x):
    with torch.no_grad():
        return model.double().eval()(x.double())


def check_close(case, what, a, b, tol):
    d = (a.double() - b.double()).abs().max().item()
    MAX_DIFF.setdefault(case, {})[what] = d
    if not d <= tol:
        raise SystemExit(f"{case}: {what}: max abs diff {d:.3g} > {tol:g}")
    log(f"  {case}: {what}: max abs diff {d:.3g} (tol {tol:g})")


def expected_meta(case, cfg, seed, layout, batch, extra=None):
    m = {"case": case, "seed": str(seed), "layout": layout, "batch": str(batch),
         "config": cfg.to_json(),
         "input": f'randinit fill name="input" scale=1 offset=0 seed={seed}, shape (B,3,H,W)',
         "weights": f"randinit_tensor(canonical name, seed={seed})",
         "compute": "float64 (torch), stored float32",
         "generator": "tools/reference/gen_vit_goldens.py"}
    if extra:
        m.update(extra)
    return m


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_expected(path, x, y, meta):
    st_write.save(path, {"input": x.float(), "output": y.float()}, meta)


def model_meta(case, seed, layout):
    return {"format": "pt", "vitfit_case": case, "vitfit_seed": str(seed),
            "vitfit_layout": layout}


# ---------------------------------------------------------------- cases

def case_timm(out, case, cfg):
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    state = vit_ref.random_state_dict(cfg, seed)
    ckpt = vit_ref.export(state, cfg, "timm")
    if cfg.pool == "mean":
        assert "fc_norm.weight" in ckpt and "norm.weight" not in ckpt
    ref = vit_ref.build(cfg, seed)
    x = vit_ref.random_input(BATCH, cfg, seed)
    y = f64_output(ref, x)
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    st_write.save(os.path.join(d, "model.safetensors"), ckpt, model_meta(case, seed, "timm"))
    write_json(os.path.join(d, "config.json"), {
        "architecture": "vit_tiny_test",
        "num_classes": cfg.num_classes,
        "num_features": cfg.width,
        "global_pool": "token" if cfg.pool == "cls" else "avg",
        "model_args": {"img_size": cfg.image_size, "patch_size": cfg.patch_size,
                       "embed_dim": cfg.width, "depth": cfg.depth, "num_heads": cfg.heads,
                       "mlp_ratio": cfg.mlp_dim / cfg.width},
        "label_names": LABELS,
        "pretrained_cfg": {"input_size": [3, cfg.image_size, cfg.image_size],
                           "interpolation": "bicubic", "crop_pct": 0.9,
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "num_classes": cfg.num_classes},
    })
    save_expected(os.path.join(d, "expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "timm", BATCH))


def case_hf(out, case, cfg):
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    state = vit_ref.random_state_dict(cfg, seed)
    ckpt = vit_ref.export(state, cfg, "hf")
    ref = vit_ref.build(cfg, seed)
    x = vit_ref.random_input(BATCH, cfg, seed)
    y = f64_output(ref, x)
    hf = upstream_like.HFViTForImageClassification(
        hidden_size=cfg.width, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
        intermediate_size=cfg.mlp_dim, image_size=cfg.image_size, patch_size=cfg.patch_size,
        layer_norm_eps=cfg.ln_eps, num_labels=cfg.num_classes)
    hf.load_state_dict(ckpt, strict=True)
    check_close(case, "HF-structured vs reference (float64)", f64_output(hf, x), y, 1e-10)
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    st_write.save(os.path.join(d, "model.safetensors"), ckpt, model_meta(case, seed, "hf"))
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "hidden_size": cfg.width,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.mlp_dim,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": 3,
        "layer_norm_eps": cfg.ln_eps,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "id2label": {str(i): n for i, n in enumerate(LABELS)},
        "label2id": {n: i for i, n in enumerate(LABELS)},
    })
    save_expected(os.path.join(d, "expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "hf", BATCH))


def torchvision_model(cfg):
    from torchvision.models.vision_transformer import VisionTransformer
    assert cfg.act == "gelu" and cfg.ln_eps == 1e-6 and cfg.patch_bias and cfg.pool == "cls"
    return VisionTransformer(image_size=cfg.image_size, patch_size=cfg.patch_size,
                             num_layers=cfg.depth, num_heads=cfg.heads, hidden_dim=cfg.width,
                             mlp_dim=cfg.mlp_dim, num_classes=cfg.num_classes)


def case_tv(out, case, cfg):
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    state = vit_ref.random_state_dict(cfg, seed)
    ckpt = vit_ref.export(state, cfg, "torchvision")
    tv = torchvision_model(cfg)
    tv.load_state_dict(ckpt, strict=True)
    tv.eval()
    ref = vit_ref.build(cfg, seed)
    x = vit_ref.random_input(BATCH, cfg, seed)
    with torch.no_grad():
        check_close(case, "torchvision vs reference (float32)", tv(x), ref(x), 1e-5)
    y = f64_output(tv, x)
    check_close(case, "torchvision vs reference (float64)", y, f64_output(ref, x), 1e-10)
    st_write.save(os.path.join(out, "tiny_tv.safetensors"), ckpt,
                  model_meta(case, seed, "torchvision"))
    save_expected(os.path.join(out, "tiny_tv.expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "torchvision", BATCH,
                                {"golden_from": "torchvision.models.vision_transformer."
                                                "VisionTransformer (float64)"}))


def case_clip(out, case, cfg):
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    state = vit_ref.random_state_dict(cfg, seed)
    ckpt = vit_ref.export(state, cfg, "clip")
    assert tuple(ckpt["visual.class_embedding"].shape) == (cfg.width,)
    assert tuple(ckpt["visual.positional_embedding"].shape) == (cfg.tokens, cfg.width)
    assert tuple(ckpt["visual.proj"].shape) == (cfg.width, cfg.proj_dim)
    ref = vit_ref.build(cfg, seed)
    x = vit_ref.random_input(BATCH, cfg, seed)
    y = f64_output(ref, x)
    clip = upstream_like.ClipVisual(input_resolution=cfg.image_size, patch_size=cfg.patch_size,
                                    width=cfg.width, layers=cfg.depth, heads=cfg.heads,
                                    output_dim=cfg.proj_dim, eps=cfg.ln_eps)
    clip.load_state_dict(ckpt, strict=True)
    check_close(case, "CLIP-structured vs reference (float64)", f64_output(clip, x), y, 1e-10)
    st_write.save(os.path.join(out, "tiny_clip.safetensors"), ckpt,
                  model_meta(case, seed, "clip"))
    save_expected(os.path.join(out, "tiny_clip.expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "clip", BATCH,
                                {"output": "projected pooled feature (B, D), no head"}))


# ---------------------------------------------------------------- layout variants
#
# Other spellings of the same layouts that a loader must accept.

def case_tv_linear(out, case="tiny_tv_linear", cfg=TINY_TV_LINEAR):
    """torchvision < 0.13 named its MLP mlp.linear_1 / mlp.linear_2 (single
    file, no config)."""
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    ckpt = vit_ref.export(vit_ref.random_state_dict(cfg, seed), cfg, "torchvision")
    old = {n.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): t
           for n, t in ckpt.items()}
    assert sum(".mlp.linear_1." in n for n in old) == 2 * cfg.depth
    assert sum(".mlp.linear_2." in n for n in old) == 2 * cfg.depth
    assert not any(".mlp.0." in n or ".mlp.3." in n for n in old)
    # torchvision's MLPBlock._load_from_state_dict still maps these names
    # (for state dicts without version metadata): strict loading proves them.
    tv = torchvision_model(cfg)
    tv.load_state_dict(dict(old), strict=True)
    x = vit_ref.random_input(BATCH, cfg, seed)
    y = f64_output(tv, x)
    check_close(case, "old-name torchvision vs reference (float64)", y,
                f64_output(vit_ref.build(cfg, seed), x), 1e-10)
    st_write.save(os.path.join(out, "tiny_tv_linear.safetensors"), old,
                  model_meta(case, seed, "torchvision (< 0.13 MLP names)"))
    save_expected(os.path.join(out, "tiny_tv_linear.expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "torchvision", BATCH,
                                {"golden_from": "torchvision VisionTransformer loading "
                                                "mlp.linear_1/linear_2 (float64)"}))


def case_hf_bare(out, case="tiny_hf_bare", cfg=TINY_HF_BARE):
    """HF ViTModel saved on its own: no "vit." prefix, no classifier, and a
    pooler (dense + tanh on the class token) that vitfit ignores: its output
    is the final LayerNorm's class token, HF's last_hidden_state[:, 0]."""
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    ckpt = vit_ref.export(vit_ref.random_state_dict(cfg, seed), cfg, "hf")
    assert all(n.startswith("vit.") for n in ckpt)
    bare = {n[len("vit."):]: t for n, t in ckpt.items()}
    hf = upstream_like.HFViTForImageClassification(
        hidden_size=cfg.width, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
        intermediate_size=cfg.mlp_dim, image_size=cfg.image_size, patch_size=cfg.patch_size,
        layer_norm_eps=cfg.ln_eps, num_labels=1)
    hf.vit.load_state_dict(bare, strict=True)
    x = vit_ref.random_input(BATCH, cfg, seed)
    y = f64_output(vit_ref.build(cfg, seed), x)
    with torch.no_grad():
        hf = hf.double()
        h = hf.vit.embeddings(x.double())
        for layer in hf.vit.encoder.layer:
            h = layer(h)
        feat = hf.vit.layernorm(h)[:, 0, :]
    check_close(case, "HF ViTModel last_hidden_state[:, 0] vs reference (float64)", feat, y,
                1e-10)
    for name, shape in (("pooler.dense.weight", (cfg.width, cfg.width)),
                        ("pooler.dense.bias", (cfg.width,))):
        bare[name] = torch.from_numpy(vit_ref.randinit.tensor(name, shape, seed))
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    st_write.save(os.path.join(d, "model.safetensors"), bare,
                  model_meta(case, seed, "hf (ViTModel, no vit. prefix)"))
    write_json(os.path.join(d, "config.json"), {  # heads are not visible in any shape
        "architectures": ["ViTModel"], "model_type": "vit", "hidden_size": cfg.width,
        "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.mlp_dim, "image_size": cfg.image_size,
        "patch_size": cfg.patch_size, "layer_norm_eps": cfg.ln_eps, "hidden_act": "gelu",
    })
    save_expected(os.path.join(d, "expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "hf", BATCH,
                                {"output": "final-LN class token (B, C); the pooler is ignored"}))


def case_clip_bare(out, case="tiny_clip_bare", cfg=TINY_CLIP_BARE):
    """The CLIP visual tower saved on its own, without the "visual." prefix
    (single file, no config)."""
    seed = SEEDS[case]
    log(f"{case}: seed {seed}")
    ckpt = vit_ref.export(vit_ref.random_state_dict(cfg, seed), cfg, "clip")
    assert all(n.startswith("visual.") for n in ckpt)
    bare = {n[len("visual."):]: t for n, t in ckpt.items()}
    clip = upstream_like.ClipVisual(input_resolution=cfg.image_size, patch_size=cfg.patch_size,
                                    width=cfg.width, layers=cfg.depth, heads=cfg.heads,
                                    output_dim=cfg.proj_dim, eps=cfg.ln_eps)
    clip.visual.load_state_dict(bare, strict=True)
    x = vit_ref.random_input(BATCH, cfg, seed)
    y = f64_output(clip, x)
    check_close(case, "bare CLIP visual vs reference (float64)", y,
                f64_output(vit_ref.build(cfg, seed), x), 1e-10)
    st_write.save(os.path.join(out, "tiny_clip_bare.safetensors"), bare,
                  model_meta(case, seed, "clip (no visual. prefix)"))
    save_expected(os.path.join(out, "tiny_clip_bare.expected.safetensors"), x, y,
                  expected_meta(case, cfg, seed, "clip", BATCH,
                                {"output": "projected pooled feature (B, D), no head"}))


def case_vit_b16(out, case="vit_b16", cfg=VIT_B16, batch=2):
    import torchvision
    seed = SEEDS[case]
    log(f"{case}: seed {seed} (full size, takes a while)")
    state = vit_ref.random_state_dict(cfg, seed)
    ckpt = vit_ref.export(state, cfg, "torchvision")
    tv = torchvision.models.vit_b_16()
    tv.load_state_dict(ckpt, strict=True)
    tv.eval()
    ref = vit_ref.build(cfg, seed)
    x = vit_ref.random_input(batch, cfg, seed)
    with torch.no_grad():
        check_close(case, "torchvision vs reference (float32)", tv(x), ref(x), 1e-4)
    y = f64_output(tv, x)
    check_close(case, "torchvision vs reference (float64)", y, f64_output(ref, x), 1e-10)
    st_write.save(os.path.join(out, "vit_b16.expected.safetensors"), {"output": y.float()},
                  expected_meta(case, cfg, seed, "torchvision", batch,
                                {"golden_from": "torchvision.models.vit_b_16 (float64)",
                                 "note": "weights and input are not stored: regenerate them "
                                         "with randinit (canonical names, this seed)"}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "golden"))
    ap.add_argument("--skip-b16", action="store_true", help="skip the full ViT-B/16 case")
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order: byte-identical reruns
    torch.manual_seed(0)      # nothing random is used, but module init draws numbers
    os.makedirs(args.out, exist_ok=True)
    case_timm(args.out, "tiny_timm", TINY_TIMM)
    case_timm(args.out, "tiny_timm_meanpool", TINY_TIMM_MEAN)
    case_hf(args.out, "tiny_hf", TINY_HF)
    case_tv(args.out, "tiny_tv", TINY_TV)
    case_clip(args.out, "tiny_clip", TINY_CLIP)
    case_tv_linear(args.out)
    case_hf_bare(args.out)
    case_clip_bare(args.out)
    if not args.skip_b16:
        case_vit_b16(args.out)
    log("max abs diffs:")
    for case, d in MAX_DIFF.items():
        for what, v in d.items():
            log(f"  {case:20s} {what:45s} {v:.3g}")


if __name__ == "__main__":
    main()
