#!/usr/bin/python3
"""End-to-end goldens: image file -> the checkpoint's own preprocessing -> output.

    /usr/bin/python3 tools/reference/gen_preprocess_goldens.py [--out DIR]

The forward goldens of gen_vit_goldens.py feed ready-made tensors, so nothing
there checks that the preprocessing a checkpoint asks for (crop_pct, bicubic vs
bilinear, mean/std; from config.json, preprocessor_config.json or the layout's
defaults) is the one applied.  Each case here names a checkpoint and three
image files of tests/data/images (lossless formats, so decoding is exact), runs
PIL + torchvision transforms exactly as the checkpoint's ecosystem does, and
stores the preprocessed batch and the reference ViT's output (float64, stored
float32):

  e2e_timm/     timm hub config.json: crop_pct 0.8 (resize 40, crop 32),
                bicubic, ImageNet mean/std              (new tiny model, seed 301)
  e2e_hf/       HF config.json + preprocessor_config.json (ViTImageProcessor:
                both sides to 32, resample 3 = bicubic, ImageNet mean/std)
                                                        (new tiny model, seed 302)
  e2e_clip.expected.safetensors   tiny_clip.safetensors with the CLIP layout's
                defaults: Resize(42) bicubic, CenterCrop(42), CLIP mean/std
  e2e_tv.expected.safetensors     tiny_tv.safetensors with torchvision's
                defaults: Resize(36 = 32 * 256 / 224) bilinear, CenterCrop(32),
                ImageNet mean/std

Every expected file holds `input` (B, 3, H, W) and `output` (B, K or D); its
__metadata__ names the `model` and the `images` (JSON list, paths relative to
the repository) and describes the `preprocess`.  Before writing, the script
checks that every plausible misreading of the preprocessing (the option
ignored, the other interpolation, default statistics) moves the preprocessed
input by far more than the C test's tolerance, so each one fails the test.
Output is byte-deterministic.
"""
import argparse
import json
import math
import os
import sys

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_vit_goldens  # noqa: E402  (tiny_clip / tiny_tv configs and seeds)
import st_write  # noqa: E402
import vit_ref  # noqa: E402
from vit_ref import ViTConfig  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
IMAGES = ["tests/data/images/chelsea.png",       # 200x133 RGB, landscape
          "tests/data/images/camera_grey.png",   # 128x128 grey -> RGB
          "tests/data/images/rocket.bmp"]        # 96x64 BMP
LABELS = ["cat", "coffee", "camera", "rocket"]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
HALF = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
C_TOL_INPUT = 1e-5   # test_vit.c: atol for the preprocessed input
MIN_MISREAD = 1e-2   # a misreading must move some input value at least this much

TINY_E2E = ViTConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2, mlp_dim=64,
                     num_classes=4, ln_eps=1e-6, act="gelu", pool="cls", patch_bias=True)
TINY_E2E_HF = ViTConfig(**{**TINY_E2E.__dict__, "ln_eps": 1e-12})


def log(*a):
    print(*a, flush=True)


def pipeline(resize, crop, interp, stats):
    """torchvision eval transforms; resize is an int (shorter side) or (h, w)."""
    steps = [transforms.Resize(resize, interpolation=interp)]
    if crop:
        steps.append(transforms.CenterCrop(crop))
    steps += [transforms.ToTensor(), transforms.Normalize(stats[0], stats[1])]
    return transforms.Compose(steps)


def batch(tf):
    return torch.stack([tf(Image.open(os.path.join(REPO, p)).convert("RGB")) for p in IMAGES])


def check_misreadings(case, x, misreadings):
    for what, tf in misreadings.items():
        d = (batch(tf) - x).abs().max().item()
        log(f"  {case}: misreading '{what}' moves the input by up to {d:.3g}")
        if not d >= MIN_MISREAD:
            raise SystemExit(f"{case}: '{what}' would not be caught ({d:.3g} < {MIN_MISREAD})")
    assert MIN_MISREAD > 100 * C_TOL_INPUT


def save_expected(path, x, y, model, preprocess):
    meta = {"model": model, "images": json.dumps(IMAGES), "preprocess": preprocess,
            "compute": "PIL + torchvision transforms; reference ViT in float64, stored float32",
            "generator": "tools/reference/gen_preprocess_goldens.py"}
    st_write.save(path, {"input": x.float(), "output": y.float()}, meta)
    log(f"  wrote {os.path.relpath(path, REPO)}")


def output(cfg, seed, x):
    with torch.no_grad():
        return vit_ref.build(cfg, seed).double()(x.double())


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def model_meta(case, seed, layout):
    return {"format": "pt", "vitfit_case": case, "vitfit_seed": str(seed),
            "vitfit_layout": layout}


def case_timm(out, case="e2e_timm", cfg=TINY_E2E, seed=301):
    log(f"{case}: seed {seed}")
    crop_pct = 0.8
    scale = math.floor(cfg.image_size / crop_pct)  # timm transforms_factory
    x = batch(pipeline(scale, cfg.image_size, InterpolationMode.BICUBIC, IMAGENET))
    check_misreadings(case, x, {
        "crop_pct ignored (0.875)": pipeline(math.floor(cfg.image_size / 0.875), cfg.image_size,
                                             InterpolationMode.BICUBIC, IMAGENET),
        "timm in21k preset (crop_pct 0.9, 0.5/0.5)": pipeline(
            math.floor(cfg.image_size / 0.9), cfg.image_size, InterpolationMode.BICUBIC, HALF),
        "bilinear": pipeline(scale, cfg.image_size, InterpolationMode.BILINEAR, IMAGENET),
        "mean/std 0.5": pipeline(scale, cfg.image_size, InterpolationMode.BICUBIC, HALF),
    })
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    ckpt = vit_ref.export(vit_ref.random_state_dict(cfg, seed), cfg, "timm")
    st_write.save(os.path.join(d, "model.safetensors"), ckpt, model_meta(case, seed, "timm"))
    write_json(os.path.join(d, "config.json"), {
        "architecture": "vit_e2e_test",
        "num_classes": cfg.num_classes,
        "num_features": cfg.width,
        "global_pool": "token",
        "model_args": {"img_size": cfg.image_size, "patch_size": cfg.patch_size,
                       "embed_dim": cfg.width, "depth": cfg.depth, "num_heads": cfg.heads,
                       "mlp_ratio": cfg.mlp_dim / cfg.width},
        "label_names": LABELS,
        "pretrained_cfg": {"input_size": [3, cfg.image_size, cfg.image_size],
                           "interpolation": "bicubic", "crop_pct": crop_pct,
                           "crop_mode": "center", "mean": IMAGENET[0], "std": IMAGENET[1],
                           "num_classes": cfg.num_classes},
    })
    save_expected(os.path.join(d, "expected.safetensors"), x, output(cfg, seed, x),
                  f"tests/data/golden/{case}",
                  f"Resize({scale}, bicubic), CenterCrop({cfg.image_size}), ImageNet mean/std")


def case_hf(out, case="e2e_hf", cfg=TINY_E2E_HF, seed=302):
    log(f"{case}: seed {seed}")
    side = (cfg.image_size, cfg.image_size)
    # ViTImageProcessor: PIL resize of both sides with `resample`, x / 255, normalize
    x = batch(pipeline(side, None, InterpolationMode.BICUBIC, IMAGENET))
    check_misreadings(case, x, {
        "HF defaults (bilinear, 0.5/0.5)": pipeline(side, None, InterpolationMode.BILINEAR,
                                                    HALF),
        "resample ignored (bilinear)": pipeline(side, None, InterpolationMode.BILINEAR,
                                                IMAGENET),
        "mean/std ignored (0.5)": pipeline(side, None, InterpolationMode.BICUBIC, HALF),
    })
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    ckpt = vit_ref.export(vit_ref.random_state_dict(cfg, seed), cfg, "hf")
    st_write.save(os.path.join(d, "model.safetensors"), ckpt, model_meta(case, seed, "hf"))
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["ViTForImageClassification"], "model_type": "vit",
        "hidden_size": cfg.width, "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.heads, "intermediate_size": cfg.mlp_dim,
        "image_size": cfg.image_size, "patch_size": cfg.patch_size, "num_channels": 3,
        "layer_norm_eps": cfg.ln_eps, "hidden_act": "gelu", "qkv_bias": True,
        "id2label": {str(i): n for i, n in enumerate(LABELS)},
        "label2id": {n: i for i, n in enumerate(LABELS)},
    })
    write_json(os.path.join(d, "preprocessor_config.json"), {
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": IMAGENET[0], "image_std": IMAGENET[1],
        "image_processor_type": "ViTImageProcessor", "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": cfg.image_size, "width": cfg.image_size},
    })
    save_expected(os.path.join(d, "expected.safetensors"), x, output(cfg, seed, x),
                  f"tests/data/golden/{case}",
                  f"Resize({side}, bicubic), ImageNet mean/std (preprocessor_config.json)")


def case_clip(out, case="e2e_clip"):
    cfg, seed = gen_vit_goldens.TINY_CLIP, gen_vit_goldens.SEEDS["tiny_clip"]
    log(f"{case}: tiny_clip, seed {seed}")
    n = cfg.image_size
    x = batch(pipeline(n, n, InterpolationMode.BICUBIC, CLIP))  # OpenAI clip _transform
    check_misreadings(case, x, {
        "bilinear": pipeline(n, n, InterpolationMode.BILINEAR, CLIP),
        "ImageNet mean/std": pipeline(n, n, InterpolationMode.BICUBIC, IMAGENET),
        "squash instead of crop": pipeline((n, n), None, InterpolationMode.BICUBIC, CLIP),
    })
    save_expected(os.path.join(out, "e2e_clip.expected.safetensors"), x, output(cfg, seed, x),
                  "tests/data/golden/tiny_clip.safetensors",
                  f"Resize({n}, bicubic), CenterCrop({n}), CLIP mean/std (layout defaults)")


def case_tv(out, case="e2e_tv"):
    cfg, seed = gen_vit_goldens.TINY_TV, gen_vit_goldens.SEEDS["tiny_tv"]
    log(f"{case}: tiny_tv, seed {seed}")
    n = cfg.image_size
    r = n * 256 // 224  # torchvision's ViT weights: Resize(256), CenterCrop(224), scaled
    x = batch(pipeline(r, n, InterpolationMode.BILINEAR, IMAGENET))
    check_misreadings(case, x, {
        "bicubic": pipeline(r, n, InterpolationMode.BICUBIC, IMAGENET),
        "no 256/224 margin": pipeline(n, n, InterpolationMode.BILINEAR, IMAGENET),
        "mean/std 0.5": pipeline(r, n, InterpolationMode.BILINEAR, HALF),
    })
    save_expected(os.path.join(out, "e2e_tv.expected.safetensors"), x, output(cfg, seed, x),
                  "tests/data/golden/tiny_tv.safetensors",
                  f"Resize({r}, bilinear), CenterCrop({n}), ImageNet mean/std (layout defaults)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    case_timm(args.out)
    case_hf(args.out)
    case_clip(args.out)
    case_tv(args.out)


if __name__ == "__main__":
    main()
