"""Independent re-implementations in the *structure* of upstream code, used only
to cross-check the exported checkpoint names, shapes and transposes (load the
exported state dict with strict=True, compare outputs with vit_ref.ViT).

  ClipVisual  - the OpenAI CLIP visual tower (clip/model.py VisionTransformer:
                nn.MultiheadAttention, QuickGELU, ln_pre/ln_post, x @ proj),
                wrapped so that keys start with "visual.".
  HFViTForImageClassification - HF transformers ViT (separate q/k/v Linear,
                layernorm_before/after, classifier on token 0).

torchvision is checked against the real torchvision.models.VisionTransformer.
Dev-only; written from the public architecture descriptions.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- OpenAI CLIP

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, eps):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x):  # (L, B, D), sequence first like OpenAI's code
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, eps):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, eps)
                                         for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim, eps=1e-5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(
            torch.zeros((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        self.transformer = Transformer(width, layers, heads, eps)
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1],
                                                             dtype=x.dtype)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class ClipVisual(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.visual = VisionTransformer(**kw)

    def forward(self, x):
        return self.visual(x)


# ---------------------------------------------------------------- HF transformers ViT

class _HFPatchEmbeddings(nn.Module):
    def __init__(self, c, p):
        super().__init__()
        self.projection = nn.Conv2d(3, c, p, stride=p)

    def forward(self, x):
        return self.projection(x).flatten(2).transpose(1, 2)


class _HFEmbeddings(nn.Module):
    def __init__(self, c, p, n):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embeddings = _HFPatchEmbeddings(c, p)
        self.position_embeddings = nn.Parameter(torch.zeros(1, n, c))

    def forward(self, x):
        e = self.patch_embeddings(x)
        e = torch.cat([self.cls_token.expand(e.shape[0], -1, -1), e], dim=1)
        return e + self.position_embeddings


class _HFSelfAttention(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh, self.hs = nh, c // nh
        self.query = nn.Linear(c, c)
        self.key = nn.Linear(c, c)
        self.value = nn.Linear(c, c)

    def _split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.nh, self.hs).permute(0, 2, 1, 3)

    def forward(self, h):
        q, k, v = self._split(self.query(h)), self._split(self.key(h)), self._split(self.value(h))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hs)
        ctx = torch.matmul(s.softmax(dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.shape[0], ctx.shape[1], -1)


class _HFDense(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.dense = nn.Linear(i, o)


class _HFAttention(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.attention = _HFSelfAttention(c, nh)
        self.output = _HFDense(c, c)

    def forward(self, h):
        return self.output.dense(self.attention(h))


class _HFLayer(nn.Module):
    def __init__(self, c, nh, m, eps):
        super().__init__()
        self.attention = _HFAttention(c, nh)
        self.intermediate = _HFDense(c, m)
        self.output = _HFDense(m, c)
        self.layernorm_before = nn.LayerNorm(c, eps=eps)
        self.layernorm_after = nn.LayerNorm(c, eps=eps)

    def forward(self, h):
        h = self.attention(self.layernorm_before(h)) + h
        y = F.gelu(self.intermediate.dense(self.layernorm_after(h)))
        return self.output.dense(y) + h


class _HFEncoder(nn.Module):
    def __init__(self, c, nh, m, eps, depth):
        super().__init__()
        self.layer = nn.ModuleList([_HFLayer(c, nh, m, eps) for _ in range(depth)])


class _HFViTModel(nn.Module):
    def __init__(self, c, nh, m, eps, depth, p, n):
        super().__init__()
        self.embeddings = _HFEmbeddings(c, p, n)
        self.encoder = _HFEncoder(c, nh, m, eps, depth)
        self.layernorm = nn.LayerNorm(c, eps=eps)


class HFViTForImageClassification(nn.Module):
    def __init__(self, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                 image_size, patch_size, layer_norm_eps, num_labels):
        super().__init__()
        n = (image_size // patch_size) ** 2 + 1
        self.vit = _HFViTModel(hidden_size, num_attention_heads, intermediate_size,
                               layer_norm_eps, num_hidden_layers, patch_size, n)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, x):
        h = self.vit.embeddings(x)
        for layer in self.vit.encoder.layer:
            h = layer(h)
        h = self.vit.layernorm(h)
        return self.classifier(h[:, 0, :])
