"""A small, readable PyTorch reference ViT with the timm semantics, parameters
stored under the canonical names of engine/vit.h.  Dev-only; see README.md.

    x = patch_embed(img)                     conv PxP stride P, optional bias -> (B, G*G, C)
    x = cat(cls_token, x) + pos_embed        (B, N, C)
    x = norm_pre(x)                          [CLIP ln_pre]
    for each block (pre-LN):
        x = x + attn.proj(MHSA(norm1(x)))    fused qkv, rows q|k|v, heads reshape(B,N,3,NH,hs)
        x = x + mlp.fc2(act(mlp.fc1(norm2(x))))
    pool cls : f = norm(x)[:, 0]
    pool mean: f = norm(mean(x[:, 1:]))      (timm fc_norm)
    f = f @ proj.weight.T                    [CLIP projection, no bias]
    out = head(f)                            [absent: feature extractor]
"""
import dataclasses
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import randinit


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000    # 0: no head
    proj_dim: int = 0          # 0: no projection
    ln_eps: float = 1e-6
    act: str = "gelu"          # "gelu" (exact erf) | "quick_gelu"
    pool: str = "cls"          # "cls" | "mean"
    ln_pre: bool = False
    patch_bias: bool = True

    @property
    def grid(self):
        return self.image_size // self.patch_size

    @property
    def tokens(self):
        return self.grid * self.grid + 1

    @property
    def feature_dim(self):
        return self.proj_dim if self.proj_dim else self.width

    @property
    def output_dim(self):
        return self.num_classes if self.num_classes else self.feature_dim

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))


def canonical_shapes(cfg: ViTConfig):
    """[(canonical name, shape)] in forward order, exactly the tensors of cfg."""
    C, M, P, N = cfg.width, cfg.mlp_dim, cfg.patch_size, cfg.tokens
    out = [("cls_token", (1, 1, C)), ("pos_embed", (1, N, C)),
           ("patch_embed.proj.weight", (C, 3, P, P))]
    if cfg.patch_bias:
        out.append(("patch_embed.proj.bias", (C,)))
    if cfg.ln_pre:
        out += [("norm_pre.weight", (C,)), ("norm_pre.bias", (C,))]
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        out += [(b + "norm1.weight", (C,)), (b + "norm1.bias", (C,)),
                (b + "attn.qkv.weight", (3 * C, C)), (b + "attn.qkv.bias", (3 * C,)),
                (b + "attn.proj.weight", (C, C)), (b + "attn.proj.bias", (C,)),
                (b + "norm2.weight", (C,)), (b + "norm2.bias", (C,)),
                (b + "mlp.fc1.weight", (M, C)), (b + "mlp.fc1.bias", (M,)),
                (b + "mlp.fc2.weight", (C, M)), (b + "mlp.fc2.bias", (C,))]
    out += [("norm.weight", (C,)), ("norm.bias", (C,))]
    if cfg.proj_dim:
        out.append(("proj.weight", (cfg.proj_dim, C)))
    if cfg.num_classes:
        out += [("head.weight", (cfg.num_classes, cfg.feature_dim)),
                ("head.bias", (cfg.num_classes,))]
    return out


def random_state_dict(cfg: ViTConfig, seed: int):
    """Canonical float32 state dict from randinit (same values as vit_model_randomize)."""
    return {name: torch.from_numpy(randinit.tensor(name, shape, seed))
            for name, shape in canonical_shapes(cfg)}


def random_input(batch: int, cfg: ViTConfig, seed: int):
    """(B, 3, H, W) float32 test input: randinit fill of "input", scale 1, offset 0."""
    n = batch * 3 * cfg.image_size * cfg.image_size
    a = randinit.fill(n, "input", seed, 1.0, 0.0)
    return torch.from_numpy(a.reshape(batch, 3, cfg.image_size, cfg.image_size))


# ---------------------------------------------------------------- modules

def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=True)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=True)

    def forward(self, x):
        B, N, C = x.shape
        hs = C // self.heads
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, hs).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                      # (B, NH, N, hs)
        attn = (q * hs ** -0.5) @ k.transpose(-2, -1)         # (B, NH, N, N)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)
        self.act = F.gelu if cfg.act == "gelu" else quick_gelu  # F.gelu default = exact erf

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size,
                              bias=cfg.patch_bias)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)        # (B, G*G, C)


class ViT(nn.Module):
    """state_dict() keys are exactly canonical_shapes(cfg)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.width
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.tokens, C))
        self.patch_embed = PatchEmbed(cfg)
        self.norm_pre = nn.LayerNorm(C, eps=cfg.ln_eps) if cfg.ln_pre else None
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(C, eps=cfg.ln_eps)
        self.proj = nn.Linear(C, cfg.proj_dim, bias=False) if cfg.proj_dim else None
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes) if cfg.num_classes else None

    def forward(self, img):
        x = self.patch_embed(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        if self.norm_pre is not None:
            x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x)
        if self.cfg.pool == "cls":
            f = self.norm(x)[:, 0]
        else:
            f = self.norm(x[:, 1:].mean(dim=1))
        if self.proj is not None:
            f = self.proj(f)                                   # f @ proj.weight.T
        if self.head is not None:
            f = self.head(f)
        return f


def build(cfg: ViTConfig, seed: int) -> ViT:
    """Reference model with randinit weights for (cfg, seed), eval mode, float32."""
    m = ViT(cfg)
    m.load_state_dict(random_state_dict(cfg, seed), strict=True)
    return m.eval()


# ---------------------------------------------------------------- layouts
#
# Each layout is a table of (canonical name, checkpoint name(s), op).  `{i}` is
# the block index.  Ops:
#   same      tensor unchanged
#   vec       flatten: cls_token (1,1,C) -> (C,)
#   drop0     drop the leading batch dim: pos_embed (1,N,C) -> (N,C)
#   t         2-D transpose: proj.weight (D,C) -> CLIP visual.proj (C,D)
#   split3    (3C, ...) -> three (C, ...) tensors q, k, v (HF)
# Canonical tensors a config does not have are skipped; every canonical tensor
# the config has must be mapped (checked in export()).

_BLOCK_KEYS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
               "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
               "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]

LAYOUT_TIMM = (
    [(n, n, "same") for n in ["cls_token", "pos_embed", "patch_embed.proj.weight",
                              "patch_embed.proj.bias", "norm_pre.weight", "norm_pre.bias"]]
    + [("blocks.{i}." + k, "blocks.{i}." + k, "same") for k in _BLOCK_KEYS]
    + [(n, n, "same") for n in ["norm.weight", "norm.bias", "head.weight", "head.bias"]]
)
# timm with global_pool="avg": the final LN comes after pooling and is called fc_norm.
LAYOUT_TIMM_MEANPOOL = [(c, {"norm.weight": "fc_norm.weight", "norm.bias": "fc_norm.bias"}.get(t, t), op)
                        for c, t, op in LAYOUT_TIMM]

_HF_L = "vit.encoder.layer.{i}."
_HF_A = _HF_L + "attention.attention."
LAYOUT_HF = [
    ("cls_token", "vit.embeddings.cls_token", "same"),                       # (1,1,C)
    ("pos_embed", "vit.embeddings.position_embeddings", "same"),             # (1,N,C)
    ("patch_embed.proj.weight", "vit.embeddings.patch_embeddings.projection.weight", "same"),
    ("patch_embed.proj.bias", "vit.embeddings.patch_embeddings.projection.bias", "same"),
    ("blocks.{i}.norm1.weight", _HF_L + "layernorm_before.weight", "same"),
    ("blocks.{i}.norm1.bias", _HF_L + "layernorm_before.bias", "same"),
    ("blocks.{i}.attn.qkv.weight", (_HF_A + "query.weight", _HF_A + "key.weight",
                                    _HF_A + "value.weight"), "split3"),
    ("blocks.{i}.attn.qkv.bias", (_HF_A + "query.bias", _HF_A + "key.bias",
                                  _HF_A + "value.bias"), "split3"),
    ("blocks.{i}.attn.proj.weight", _HF_L + "attention.output.dense.weight", "same"),
    ("blocks.{i}.attn.proj.bias", _HF_L + "attention.output.dense.bias", "same"),
    ("blocks.{i}.norm2.weight", _HF_L + "layernorm_after.weight", "same"),
    ("blocks.{i}.norm2.bias", _HF_L + "layernorm_after.bias", "same"),
    ("blocks.{i}.mlp.fc1.weight", _HF_L + "intermediate.dense.weight", "same"),
    ("blocks.{i}.mlp.fc1.bias", _HF_L + "intermediate.dense.bias", "same"),
    ("blocks.{i}.mlp.fc2.weight", _HF_L + "output.dense.weight", "same"),
    ("blocks.{i}.mlp.fc2.bias", _HF_L + "output.dense.bias", "same"),
    ("norm.weight", "vit.layernorm.weight", "same"),
    ("norm.bias", "vit.layernorm.bias", "same"),
    ("head.weight", "classifier.weight", "same"),
    ("head.bias", "classifier.bias", "same"),
]

_TV_L = "encoder.layers.encoder_layer_{i}."
LAYOUT_TORCHVISION = [
    ("cls_token", "class_token", "same"),                                    # (1,1,C)
    ("pos_embed", "encoder.pos_embedding", "same"),                          # (1,N,C)
    ("patch_embed.proj.weight", "conv_proj.weight", "same"),
    ("patch_embed.proj.bias", "conv_proj.bias", "same"),
    ("blocks.{i}.norm1.weight", _TV_L + "ln_1.weight", "same"),
    ("blocks.{i}.norm1.bias", _TV_L + "ln_1.bias", "same"),
    ("blocks.{i}.attn.qkv.weight", _TV_L + "self_attention.in_proj_weight", "same"),  # (3C,C)
    ("blocks.{i}.attn.qkv.bias", _TV_L + "self_attention.in_proj_bias", "same"),
    ("blocks.{i}.attn.proj.weight", _TV_L + "self_attention.out_proj.weight", "same"),
    ("blocks.{i}.attn.proj.bias", _TV_L + "self_attention.out_proj.bias", "same"),
    ("blocks.{i}.norm2.weight", _TV_L + "ln_2.weight", "same"),
    ("blocks.{i}.norm2.bias", _TV_L + "ln_2.bias", "same"),
    ("blocks.{i}.mlp.fc1.weight", _TV_L + "mlp.0.weight", "same"),  # torchvision >= 0.13;
    ("blocks.{i}.mlp.fc1.bias", _TV_L + "mlp.0.bias", "same"),      # older: mlp.linear_1.*
    ("blocks.{i}.mlp.fc2.weight", _TV_L + "mlp.3.weight", "same"),  # older: mlp.linear_2.*
    ("blocks.{i}.mlp.fc2.bias", _TV_L + "mlp.3.bias", "same"),
    ("norm.weight", "encoder.ln.weight", "same"),
    ("norm.bias", "encoder.ln.bias", "same"),
    ("head.weight", "heads.head.weight", "same"),
    ("head.bias", "heads.head.bias", "same"),
]

_CLIP_L = "visual.transformer.resblocks.{i}."
LAYOUT_CLIP = [
    ("cls_token", "visual.class_embedding", "vec"),                         # (C,)
    ("pos_embed", "visual.positional_embedding", "drop0"),                    # (N,C)
    ("patch_embed.proj.weight", "visual.conv1.weight", "same"),              # no bias
    ("norm_pre.weight", "visual.ln_pre.weight", "same"),
    ("norm_pre.bias", "visual.ln_pre.bias", "same"),
    ("blocks.{i}.norm1.weight", _CLIP_L + "ln_1.weight", "same"),
    ("blocks.{i}.norm1.bias", _CLIP_L + "ln_1.bias", "same"),
    ("blocks.{i}.attn.qkv.weight", _CLIP_L + "attn.in_proj_weight", "same"),
    ("blocks.{i}.attn.qkv.bias", _CLIP_L + "attn.in_proj_bias", "same"),
    ("blocks.{i}.attn.proj.weight", _CLIP_L + "attn.out_proj.weight", "same"),
    ("blocks.{i}.attn.proj.bias", _CLIP_L + "attn.out_proj.bias", "same"),
    ("blocks.{i}.norm2.weight", _CLIP_L + "ln_2.weight", "same"),
    ("blocks.{i}.norm2.bias", _CLIP_L + "ln_2.bias", "same"),
    ("blocks.{i}.mlp.fc1.weight", _CLIP_L + "mlp.c_fc.weight", "same"),
    ("blocks.{i}.mlp.fc1.bias", _CLIP_L + "mlp.c_fc.bias", "same"),
    ("blocks.{i}.mlp.fc2.weight", _CLIP_L + "mlp.c_proj.weight", "same"),
    ("blocks.{i}.mlp.fc2.bias", _CLIP_L + "mlp.c_proj.bias", "same"),
    ("norm.weight", "visual.ln_post.weight", "same"),
    ("norm.bias", "visual.ln_post.bias", "same"),
    ("proj.weight", "visual.proj", "t"),                                     # (C,D)
]

LAYOUTS = {"timm": LAYOUT_TIMM, "timm_meanpool": LAYOUT_TIMM_MEANPOOL, "hf": LAYOUT_HF,
           "torchvision": LAYOUT_TORCHVISION, "clip": LAYOUT_CLIP}


def _apply(op, t):
    if op == "same":
        return [t]
    if op == "vec":
        return [t.reshape(-1)]
    if op == "drop0":
        assert t.shape[0] == 1
        return [t[0]]
    if op == "t":
        return [t.t()]
    if op == "split3":
        return list(t.chunk(3, dim=0))
    raise ValueError(op)


def export(state: dict, cfg: ViTConfig, layout: str) -> dict:
    """Canonical state dict -> checkpoint state dict (contiguous tensors, forward order)."""
    table = LAYOUTS["timm_meanpool" if layout == "timm" and cfg.pool == "mean" else layout]
    rows = {}
    for canon, target, op in table:
        for i in (range(cfg.depth) if "{i}" in canon else [None]):
            c = canon.format(i=i) if i is not None else canon
            tg = target if isinstance(target, tuple) else (target,)
            rows[c] = ([t.format(i=i) if i is not None else t for t in tg], op)
    out = {}
    for name, _ in canonical_shapes(cfg):
        if name not in rows:
            raise KeyError(f"layout {layout} has no name for canonical tensor {name}")
        targets, op = rows[name]
        for tname, t in zip(targets, _apply(op, state[name])):
            out[tname] = t.contiguous()
    return out
